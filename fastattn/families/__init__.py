"""Model families: where a model comes from, and everything an export of it needs to know.

One typed :class:`~fastattn.families.base.Family` per family, in one ordered registry
(:data:`~fastattn.families.registry.FAMILIES`): the first family that claims a model file
or directory prepares it. Preparing means: the graphs to capture (with their cache pairs and
the reference each is validated against), the export's arch, dims and limits, the fusions
each graph should get, the task and its evaluation data, and files to carry along.

    base.py      Family, ModelSource (a path, loaded at most once), PrepareRequest, Prepared
    registry.py  FAMILIES, prepare()
    fastattn.py  fastattn's own checkpoints (config + weights)
    module.py    any other PyTorch module (TorchScript, .pt2, pickled): inputs from --input

Adding a family is one module here and one line in the registry.
"""

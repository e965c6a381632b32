"""From a model to a validated export: load, capture, lower and fuse, save, validate, quantize, package.

    options.py    ExportOptions: what one run is asked for
    state.py      ExportState: what the steps share (graphs, manifest under construction, results)
    steps/        prepare | open_export, capture, optimize, save, place, validate, quantize, finish
    pipeline.py   export(), reoptimize(), requantize(), revalidate(): compositions of the steps
    passes/       graph steps as onnx_ir passes: lower attention, inline functions, fuse, fold rotary
    lowering/     one file per lowering rule, their registry, measurement and choice
    fusion/       one file per fusion rule, their registry
    load.py, capture.py, declare/, input_spec.py, graphs.py, validate.py, report.py, versions.py

Nothing is imported here: ``fastattn.families.graphs`` and friends load without the pipeline.
"""

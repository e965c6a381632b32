"""The ordered registry of model families: the first that claims a model prepares it."""

from __future__ import annotations

from pathlib import Path

from fastattn.errors import InputError
from fastattn.families.base import Family, ModelSource, Prepared, PrepareRequest
from fastattn.families.fastattn import FastAttnFamily
from fastattn.families.hf import HuggingFaceFamily
from fastattn.families.module import ModuleFamily

FAMILIES: tuple[Family, ...] = (
    HuggingFaceFamily(),  # checkpoint directories, and pickled PreTrainedModels of a spec'd type
    FastAttnFamily(),
    ModuleFamily(),  # last: it takes any PyTorch file
)


def find(source: ModelSource) -> Family:
    """The family that claims ``source``; a path no family takes is one line naming them all."""
    if not source.path.exists():
        raise InputError(f"no such file or directory: {source.path}", "check the model path")
    for family in FAMILIES:
        if family.claims(source):
            return family
    supported = "; ".join(f"{f.name}: {f.description}" for f in FAMILIES)
    if source.path.is_dir():
        raise InputError(f"{source.path} is a directory without config.json: neither a model file nor a Hugging "
                         "Face checkpoint", "pass the model file itself (e.g. model.pt), or a directory written "
                         "by save_pretrained")  # fmt: skip
    raise InputError(f"{source.path} is a file no model family reads", f"pass one of: {supported}")


def by_name(name: str) -> Family:
    """The registered family called ``name`` (an export's manifest names the one that made it)."""
    for family in FAMILIES:
        if family.name == name:
            return family
    raise InputError(f"no model family {name!r}", f"families are {', '.join(f.name for f in FAMILIES)}")


def prepare(path: Path, request: PrepareRequest = PrepareRequest()) -> Prepared:
    """The graphs and records of an export of the model at ``path``."""
    source = ModelSource(Path(path), request.allow_pickle, request.code)
    family = find(source)
    if request.task is not None and family.name != HuggingFaceFamily.name:
        raise InputError(f"--task is for Hugging Face models; {source.path.name} is not one",
                         "drop --task, or pass a checkpoint directory (config.json + safetensors)")  # fmt: skip
    return family.prepare(source, request)

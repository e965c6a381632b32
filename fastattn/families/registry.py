"""The ordered registry of model families: the first that claims a model prepares it."""

from __future__ import annotations

from pathlib import Path

from fastattn.errors import InputError
from fastattn.families.base import Family, ModelSource, Prepared, PrepareRequest
from fastattn.families.fastattn import FastAttnFamily
from fastattn.families.module import ModuleFamily

FAMILIES: tuple[Family, ...] = (
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
    kind = "directory" if source.path.is_dir() else "file"
    raise InputError(f"{source.path} is a {kind} no model family reads", f"pass one of: {supported}")


def by_name(name: str) -> Family:
    """The registered family called ``name`` (an export's manifest names the one that made it)."""
    for family in FAMILIES:
        if family.name == name:
            return family
    raise InputError(f"no model family {name!r}", f"families are {', '.join(f.name for f in FAMILIES)}")


def prepare(path: Path, request: PrepareRequest = PrepareRequest()) -> Prepared:
    """The graphs and records of an export of the model at ``path``."""
    source = ModelSource(Path(path), request.allow_pickle)
    return find(source).prepare(source, request)

"""Hugging Face checkpoints, mapped onto fastattn's own model family.

    fastattn-export ./my-llama/ -o out/      a local directory: config.json + safetensors (+ tokenizer)

A registered family (:mod:`fastattn.hf.families`) becomes a fastattn model through its
declarative spec, so it gets everything fastattn's own models have (fused attention per EP,
trimmed KV caches, generate, --kv-buffer, fusions, gates), validated against the transformers
model itself. Nothing is ever downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from fastattn.errors import InputError
from fastattn.hf.checkpoint import is_checkpoint_dir

from fastattn.exporter.load import LoadedModel, ModelFormat

if TYPE_CHECKING:
    from fastattn.exporter.prepare import Prepared
    from fastattn.runtime.manifest import TensorSpec

__all__ = ["hf_route", "is_checkpoint_dir", "pretrained_route"]


def hf_route(path: Path, inputs: tuple[TensorSpec, ...], allow_pickle: bool, kv_buffer: bool,
             task: str | None) -> Prepared | None:  # fmt: skip
    """The exporter's hook: the prepared graphs when ``path`` is a Hugging Face checkpoint directory,
    else None (``--task`` is refused for other models)."""
    if not is_checkpoint_dir(path):
        if task is not None and not _is_pickle_candidate(path, allow_pickle):
            raise InputError(f"--task is for Hugging Face checkpoints; {path.name} is not a checkpoint directory",
                             "drop --task, or pass a directory with config.json")  # fmt: skip
        return None
    if inputs:
        raise InputError(f"{path.name} is a Hugging Face checkpoint, whose inputs fastattn declares",
                         "drop --input")  # fmt: skip
    from fastattn.hf.prepare import prepare_checkpoint

    return prepare_checkpoint(path, task, kv_buffer)


def pretrained_route(path: Path, loaded: LoadedModel, inputs: tuple[TensorSpec, ...], kv_buffer: bool,
                     task: str | None) -> Prepared | None:  # fmt: skip
    """The hook after loading: an unpickled ``PreTrainedModel`` of a registered family is exported as a
    checkpoint directory would be (without tokenizer files); None for every other model."""
    module = loaded.module
    config = getattr(module, "config", None)
    if loaded.format is not ModelFormat.PICKLED_MODULE or inputs or not hasattr(config, "model_type"):
        if task is not None:
            raise InputError(f"--task is for Hugging Face models; {path.name} is a {loaded.format.value}",
                             "drop --task")  # fmt: skip
        return None
    from fastattn.hf import families
    from fastattn.hf.prepare import prepare_pretrained

    if families.find(config.model_type) is None:
        return None
    return prepare_pretrained(module, path, task, kv_buffer, loaded.notes)


def _is_pickle_candidate(path: Path, allow_pickle: bool) -> bool:
    return allow_pickle and path.is_file()

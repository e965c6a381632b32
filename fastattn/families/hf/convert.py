"""A Hugging Face checkpoint as a fastattn model: the family's config map and weight table applied.

    convert(read_checkpoint(dir), task)   a local directory (tensors read from its files)
    convert_module(model, task)           a pickled ``PreTrainedModel`` (its config and state dict)

The result keeps the transformers config and the family, so validation can build the
transformers model itself as the reference (:mod:`fastattn.families.hf.reference`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from fastattn.errors import LoadError
from fastattn.families.hf import architectures
from fastattn.families.hf.checkpoint import Checkpoint
from fastattn.families.hf.spec import Architecture, Task
from fastattn.families.hf.weights import map_weights, strip_prefix
from fastattn.models.transformer import FastAttnModel

log = logging.getLogger(__name__)


@dataclass
class Converted:
    family: Architecture
    task: Task
    hf_config: Any  # transformers.PretrainedConfig
    model: FastAttnModel
    unused: list[str] = field(default_factory=list)  # checkpoint tensors no rule read

    def notes(self) -> list[str]:
        out = [f"Hugging Face {self.family.name} ({self.hf_config.model_type}) mapped onto fastattn's "
               f"{self.model.config.arch.value}, task {self.task.value}"]  # fmt: skip
        if self.family.note:
            out.append(self.family.note)
        if self.unused:
            shown = ", ".join(self.unused[:6]) + (f" and {len(self.unused) - 6} more" if len(self.unused) > 6 else "")
            out.append(f"checkpoint tensors not used: {shown}")
        return out


def family_of(model_type: str, architecture: str = "", no_fallback: str = "") -> Architecture:
    """The registered family of a ``model_type``; one line naming the supported ones otherwise
    (``no_fallback``: why the AttentionInterface fallback does not take it either)."""
    family = architectures.find(model_type)
    if family is not None:
        return family
    what = f"model_type {model_type!r}" + (f" ({architecture})" if architecture else "")
    why = architectures.REFUSED.get(model_type)
    if why:
        raise LoadError(f"{what} is not supported: {why}", f"export one of {', '.join(architectures.supported())}")
    because = f" ({no_fallback})" if no_fallback else ""
    raise LoadError(f"{what} is not supported{because}; supported model types: {', '.join(architectures.supported())}",
                    "export a checkpoint of a supported family")  # fmt: skip


def hf_config_of(checkpoint: Checkpoint) -> Any:
    """The transformers config of a checkpoint directory (its derived fields, such as Qwen2's layer_types)."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(checkpoint.directory, local_files_only=True)
    except Exception as e:  # ValueError, KeyError, OSError: a config transformers cannot read
        raise LoadError(f"transformers cannot read {checkpoint.directory / 'config.json'}: {_first_line(e)}",
                        "check config.json (transformers " + _version() + ")") from e  # fmt: skip


def convert(checkpoint: Checkpoint, task: str | None = None) -> Converted:
    family = family_of(checkpoint.model_type, checkpoint.architecture)
    chosen = family.task(task, checkpoint.architecture)
    hf_config = hf_config_of(checkpoint)
    return _build(family, chosen, hf_config, checkpoint.tensors(), str(checkpoint.directory))


def convert_module(module: torch.nn.Module, task: str | None = None, source: str = "model") -> Converted:
    """A ``PreTrainedModel`` object (unpickled): its config and state dict."""
    config = module.config
    architecture = type(module).__name__
    family = family_of(config.model_type, architecture)
    chosen = family.task(task, architecture)
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in module.state_dict().items()}
    return _build(family, chosen, config, state, source)


def _build(family: Architecture, task: Task, hf_config: Any, tensors: dict[str, torch.Tensor], source: str) -> Converted:
    cfg = family.model_config(hf_config)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = FastAttnModel.from_config(cfg)
    state, unused = map_weights(family.weights(cfg, hf_config), model.state_dict(),
                                strip_prefix(tensors, family.base_prefix), hf_config, source)  # fmt: skip
    model.load_state_dict(state)
    log.info("mapped %d tensors of %s onto a fastattn %s (%d unused)", len(state), source, cfg.arch.value, len(unused))
    return Converted(family, task, hf_config, model.eval(), unused)


def _version() -> str:
    import transformers

    return transformers.__version__


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__

"""What a Hugging Face model family is to fastattn: one declarative :class:`Architecture` each.

A family says which ``model_type`` values it takes, which Optimum tasks it exports, how the
transformers config maps onto fastattn's :class:`~fastattn.models.ModelConfig`

    fields   ModelConfig field <- config attribute            (``d_model <- hidden_size``)
    fixed    ModelConfig fields every model of the family has  (``norm = rmsnorm``)
    derive   the fields that need a rule: per-layer windows, activation names, biases,
             rope scaling; it raises :class:`Unsupported` for a config fastattn cannot express

and how checkpoint tensors map onto fastattn's state dict (``weights``: fastattn key pattern ->
:class:`Src`, ``{i}`` standing for a layer index). Checkpoint names are taken without the
family's base prefix (``model.``, ``bert.``), so one table serves the bare model
(``BertModel``) and task classes around it (``BertForMaskedLM``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import torch

from fastattn.errors import InputError, LoadError
from fastattn.models.config import Activation, Arch, LayerAttention, ModelConfig, Pattern

HFConfig = Any  # transformers.PretrainedConfig (imported lazily)


FAMILY = "huggingface"  # the fastattn model family (fastattn.families) both routes of this room belong to


class Task(str, Enum):
    """Optimum's task names, as ``--task`` takes them."""

    FEATURE_EXTRACTION = "feature-extraction"
    TEXT_GENERATION = "text-generation"
    TEXT2TEXT_GENERATION = "text2text-generation"


# Optimum also names the cached variants; fastattn's decoders always have a cache.
TASK_ALIASES = {"text-generation-with-past": Task.TEXT_GENERATION,
                "text2text-generation-with-past": Task.TEXT2TEXT_GENERATION}  # fmt: skip

# The transformers auto class whose model is the reference of a task.
AUTO_CLASSES = {
    Task.FEATURE_EXTRACTION: "AutoModel",
    Task.TEXT_GENERATION: "AutoModelForCausalLM",
    Task.TEXT2TEXT_GENERATION: "AutoModelForSeq2SeqLM",
}

# Hugging Face activation names -> fastattn's (ungated FFNs)
ACTIVATIONS = {
    "gelu": Activation.GELU,
    "gelu_new": Activation.GELU_TANH,
    "gelu_pytorch_tanh": Activation.GELU_TANH,
    "relu": Activation.RELU,
    "silu": Activation.SILU,
    "swish": Activation.SILU,
}


class Unsupported(Exception):
    """A config (or checkpoint) the family cannot map; the message says what and why."""


@dataclass(frozen=True)
class Src:
    """Where a fastattn tensor comes from: checkpoint tensors (the first of several alternative names
    that exists), through ``fn``; ``optional``: zeros when none exists (e.g. a bias buffer left unsaved);
    ``computed``: no tensor at all, ``computed(hf_config, shape)`` makes it (sinusoidal positions)."""

    names: tuple[str, ...] = ()
    fn: Callable[..., torch.Tensor] | None = None
    optional: bool = False
    computed: Callable[[HFConfig, torch.Size], torch.Tensor] | None = None
    sources: int = 1  # how many names ``fn`` takes (the rest are alternatives)

    @staticmethod
    def of(*alternatives: str, fn: Callable[[torch.Tensor], torch.Tensor] | None = None, optional: bool = False) -> Src:
        return Src(tuple(alternatives), fn, optional)

    @staticmethod
    def combine(fn: Callable[..., torch.Tensor], *names: str) -> Src:
        """Several tensors into one: ``fn(*tensors)`` (e.g. positions + token type 0)."""
        return Src(tuple(names), fn, sources=len(names))


WeightTable = Mapping[str, Src]


@dataclass(frozen=True)
class Architecture:
    name: str  # "llama"
    model_types: tuple[str, ...]  # config.json model_type values
    arch: Arch
    tasks: tuple[Task, ...]  # the first is the default
    fields: Mapping[str, str]  # ModelConfig field -> config attribute
    weights: Callable[[ModelConfig, HFConfig], WeightTable]
    fixed: Mapping[str, Any] = field(default_factory=dict)
    derive: Callable[[HFConfig], dict[str, Any]] = lambda _: {}
    base_prefix: str = ""  # e.g. "model.": names inside the bare model; heads (lm_head) stay outside
    # The reference takes position ids (B, S) from the mask, as transformers derives them from
    # pad tokens (RoBERTa); None: the model's own positions (decoders get cumsum-1, as generate does)
    position_ids: Callable[[HFConfig, torch.Tensor], torch.Tensor] | None = None
    note: str = ""  # for the report: what of the checkpoint is not exported

    def task(self, requested: str | None, architecture: str) -> Task:
        """The task asked for (Optimum's name), else the family's default; one line when it does not fit."""
        if requested is None:
            return self.tasks[0]
        task = TASK_ALIASES.get(requested)
        if task is None:
            try:
                task = Task(requested)
            except ValueError:
                names = ", ".join(t.value for t in Task)
                raise InputError(f"--task {requested!r} is not a task fastattn exports", f"use one of {names}") from None
        if task not in self.tasks:
            what = architecture or self.name
            raise InputError(f"{what} exports as {', '.join(t.value for t in self.tasks)}, not {task.value}",
                             f"pass --task {self.tasks[0].value} or leave --task out")  # fmt: skip
        return task

    def model_config(self, hf_config: HFConfig) -> ModelConfig:
        """The fastattn config of a transformers config; :class:`LoadError` naming what does not map."""
        values: dict[str, Any] = dict(self.fixed)
        try:
            for name, attribute in self.fields.items():
                values[name] = getattr(hf_config, attribute)
            values.update(self.derive(hf_config))
            return ModelConfig(name=f"hf:{self.name}", **values)
        except Unsupported as e:
            raise LoadError(f"this {self.name} checkpoint cannot be exported: {e}",
                            "export a checkpoint without it, or open an issue with its config.json") from e
        except (AttributeError, ValueError, TypeError) as e:
            raise LoadError(f"this {self.name} config does not map onto fastattn's model: {e}",
                            "check config.json against transformers' config class") from e  # fmt: skip


# ---- helpers the family specs share -------------------------------------------------------


def full(layers: int) -> tuple[LayerAttention, ...]:
    return (LayerAttention(),) * layers


def sliding(window: int) -> LayerAttention:
    return LayerAttention(Pattern.SLIDING, window=window)


def activation(name: str) -> Activation:
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise Unsupported(f"activation {name!r} (fastattn has {', '.join(sorted(ACTIVATIONS))})") from None


def linear(fastattn_module: str, hf_module: str) -> dict[str, Src]:
    """A Linear (or norm) module: its weight and bias (fastattn keys without a bias are not asked for)."""
    return {f"{fastattn_module}.{p}": Src.of(f"{hf_module}.{p}") for p in ("weight", "bias")}


def table(*parts: Mapping[str, Src]) -> dict[str, Src]:
    out: dict[str, Src] = {}
    for part in parts:
        out.update(part)
    return out

"""The fallback for transformers models no family spec covers: fastattn's op as an attention implementation.

transformers lets a library register an attention function (``AttentionInterface``) and the
mask it wants (``AttentionMaskInterface``). Registered as ``"fastattn"``, the function calls
``torch.ops.fastattn.attention`` with the module's own causality, its ``sliding_window`` and
``scaling``, and the 2-D padding mask the mask interface passes through; so any model whose
attention goes through the interface (``_supports_attention_backend``) exports with declared
attention, nothing pattern-matched. What it does not get: a KV cache (one graph, input_ids and
attention_mask in, logits or hidden states out), ``generate``, trimmed caches, ``--kv-buffer``,
and the fusions fastattn's own layers are written for. Families in the registry are mapped
onto fastattn's models instead (measured: docs/architecture.md).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastattn.attention.op import attention
from fastattn.attention.spec import AttentionSpec
from fastattn.errors import ExportError, LoadError
from fastattn.families.base import Prepared
from fastattn.families.graphs import GraphDef
from fastattn.families.hf.checkpoint import Checkpoint
from fastattn.families.hf.eval_text import text_eval_set
from fastattn.families.hf.spec import AUTO_CLASSES, FAMILY, Task
from fastattn.runtime.manifest import Arch, Fill, TensorSpec
from fastattn.runtime.records import HfRecord

log = logging.getLogger(__name__)

NAME = "fastattn"


def fastattn_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                       attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                       sliding_window: int | None = None, **_unused) -> tuple[torch.Tensor, None]:  # fmt: skip
    """transformers' attention signature: (B, H, S, D) query, (B, Hkv, T, D) key/value -> (B, S, H, Dv)."""
    if attention_mask is not None and attention_mask.dim() != 2:
        raise ExportError(f"{type(module).__name__} builds a {attention_mask.dim()}-D attention mask itself, "
                          "which the fastattn op cannot take",
                          "export a model whose masks come from transformers' mask interface")  # fmt: skip
    batch, heads, length, _ = query.shape
    kv_heads, keys = key.shape[1], key.shape[2]
    spec = AttentionSpec(heads, kv_heads, bool(getattr(module, "is_causal", False)), int(sliding_window or 0), 0,
                         float(scaling or 0.0))  # fmt: skip
    packed = lambda t, h, n: t.transpose(1, 2).reshape(batch, n, h * t.shape[-1])  # noqa: E731
    out, _ = attention(packed(query, heads, length), packed(key, kv_heads, keys), packed(value, kv_heads, keys), spec,
                       key_mask=attention_mask)  # fmt: skip
    return out.view(batch, length, heads, -1), None


def fastattn_mask(batch_size: int, cache_position: torch.Tensor, kv_length: int, kv_offset: int = 0,
                  mask_function=None, attention_mask: torch.Tensor | None = None, **_unused) -> torch.Tensor | None:  # fmt: skip
    """The 2-D padding mask over the keys, as it is (the op applies causality and windows itself)."""
    return None if attention_mask is None else attention_mask[:, -kv_length:]


def register() -> None:
    """Make ``attn_implementation="fastattn"`` known to transformers (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, fastattn_attention)
    AttentionMaskInterface.register(NAME, fastattn_mask)


def supports(checkpoint: Checkpoint) -> tuple[bool, str]:
    """Whether the checkpoint's transformers class routes attention through AttentionInterface; why not."""
    import transformers

    cls = getattr(transformers, checkpoint.architecture, None) if checkpoint.architecture else None
    if cls is None:
        return False, f"transformers {transformers.__version__} has no class {checkpoint.architecture or '(none named)'}"
    if not getattr(cls, "_supports_attention_backend", False):
        return False, f"{cls.__name__} does not route its attention through transformers' AttentionInterface"
    if cls.__name__.endswith("ForConditionalGeneration"):
        return False, "encoder-decoders are exported through a family spec only"
    return True, ""


def task_of(architecture: str) -> Task:
    return Task.TEXT_GENERATION if architecture.endswith("ForCausalLM") else Task.FEATURE_EXTRACTION


class _Flat(nn.Module):
    """(input_ids, attention_mask) -> the main output: logits, or the last hidden state."""

    def __init__(self, model: nn.Module, task: Task):
        super().__init__()
        self.model, self.task = model, task

    def forward(self, input_ids, attention_mask):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        return (out.logits if self.task is Task.TEXT_GENERATION else out.last_hidden_state,)


def _load(directory: Path, task: Task, implementation: str) -> Any:
    import transformers

    auto = getattr(transformers, AUTO_CLASSES[task])
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        return auto.from_pretrained(directory, local_files_only=True, attn_implementation=implementation,
                                    dtype=torch.float32).eval()  # fmt: skip
    except Exception as e:  # transformers raises many kinds for a checkpoint it cannot build
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LoadError(f"transformers cannot load {directory}: {text}", "check the checkpoint with transformers") from e
    finally:
        transformers.logging.set_verbosity(verbosity)


def prepare_generic(checkpoint: Checkpoint, task: Task | None = None) -> Prepared:
    """One graph of the transformers model with ``attn_implementation="fastattn"``; its eager twin is the reference."""
    register()
    task = task or task_of(checkpoint.architecture)
    model = _load(checkpoint.directory, task, NAME)
    reference = _load(checkpoint.directory, task, "eager")
    config = model.config
    out = (TensorSpec("logits", "float32", ("batch", "sequence", config.vocab_size)) if task is Task.TEXT_GENERATION
           else TensorSpec("last_hidden_state", "float32", ("batch", "sequence", config.hidden_size)))  # fmt: skip
    inputs = [TensorSpec("input_ids", "int64", ("batch", "sequence"), Fill.TOKENS, high=config.vocab_size),
              TensorSpec("attention_mask", "int64", ("batch", "sequence"), Fill.MASK)]  # fmt: skip
    graph = GraphDef("model", _Flat(model, task), inputs, [out], reference=_Flat(reference, task))
    tokenizer = checkpoint.carried_files().get("tokenizer.json")
    eval_set = None
    if tokenizer is not None:
        limit = getattr(config, "max_position_embeddings", None)
        eval_set = text_eval_set(tokenizer, task, config.pad_token_id or 0, None, limit)
    window = getattr(config, "sliding_window", None) or 0
    limit = getattr(config, "max_position_embeddings", None)
    return Prepared(
        family=FAMILY,
        graphs=[graph],
        arch=Arch.MODULE,
        source=f"{checkpoint.directory.name} (Hugging Face checkpoint, {checkpoint.architecture}, through "
               "transformers' AttentionInterface)",
        notes=[f"{checkpoint.model_type} has no fastattn family spec: exported with attn_implementation='fastattn' "
               "(declared attention, no KV cache)"],
        longest_window=int(window),
        eval_set=eval_set,
        max_length=int(limit) if limit else None,
        files=checkpoint.carried_files(),
        hf=HfRecord(checkpoint.model_type, "attention-interface", task.value, checkpoint.architecture,
                    files=sorted(checkpoint.carried_files())),
    )  # fmt: skip

"""The model ``fastattn train`` builds: a task's preset with the command line's changes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastattn.errors import InputError

if TYPE_CHECKING:
    from fastattn.models.config import ModelConfig

TASK_PRESETS = {"lm": "default", "classifier": "encoder", "seq2seq": "seq2seq"}


def model_config(
    task: str,
    preset: str | None = None,
    *,
    layers: int | None = None,
    d_model: int | None = None,
    heads: int | None = None,
    kv_heads: int | None = None,
    ffn: int | None = None,
    window: int | None = None,
    attention: str | None = None,
    labels: int | None = None,
) -> ModelConfig:
    """The task's preset (or ``preset``) with the given changes; every stack gets ``layers`` layers of
    full attention, or of a sliding ``window``, when either is given; ``attention`` (the
    ``--attention`` patterns) then sets every layer's pattern, or each layer's."""
    from fastattn.models import presets  # noqa: PLC0415  (torch: only when a model is made)
    from fastattn.models.config import LayerAttention, Pattern, with_attention  # noqa: PLC0415

    name = preset or TASK_PRESETS[task]
    try:
        base = presets.preset(name)
    except ValueError as e:
        raise InputError(str(e), "pick one of the names listed") from e
    changes: dict = {k: v for k, v in (("d_model", d_model), ("num_heads", heads), ("ffn_dim", ffn),
                                      ("num_labels", labels)) if v is not None}  # fmt: skip
    if kv_heads is not None or heads is not None:
        changes["kv_heads"] = kv_heads if kv_heads is not None else min(base.kv_heads, heads)
    if layers is not None or window is not None:
        layer = LayerAttention(Pattern.SLIDING, window=window) if window else LayerAttention()
        for stack in ("encoder_layers", "decoder_layers"):
            current = getattr(base, stack)
            if current:
                changes[stack] = (layer,) * (layers or len(current))
    if window is not None and attention is not None:
        raise InputError("--window and --attention both set the layers' attention", "give one of them")
    if not changes and attention is None:
        return base
    try:
        config = base.replace(name=f"{name}-custom", **changes)
    except ValueError as e:
        raise InputError(f"bad model options: {e}", "change --d-model, --heads or --kv-heads") from e
    return with_attention(config, attention)

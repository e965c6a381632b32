"""``torch.ops.fastattn.attention``: attention declared to the exporter as one op.

Model code calls :func:`attention`; eager execution runs the reference kernels, and
``torch.export`` sees a single opaque node (thanks to the fake kernel), which the ONNX
translation in :mod:`fastattn.attention.onnx_function` turns into one
``fastattn::Attention`` node. Layouts follow the op contract: packed (B, S, H·D) query,
key and value; past/present caches as (B, Hkv, P, D).
"""

from __future__ import annotations

import torch

from fastattn.attention.kernels import attend
from fastattn.attention.spec import AttentionSpec


def eager(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    past_key: torch.Tensor | None,
    past_value: torch.Tensor | None,
    key_mask: torch.Tensor | None,
    num_heads: int,
    kv_num_heads: int,
    causal: bool,
    window: int,
    global_tokens: int,
    scale: float,
    block: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The op's computation in plain (differentiable) torch: (output, present key, present value)."""
    spec = AttentionSpec(num_heads, kv_num_heads, causal, window, global_tokens, scale, block)
    B, S, _ = query.shape
    T = key.shape[1]
    q = query.view(B, S, num_heads, -1).transpose(1, 2)
    k = key.view(B, T, kv_num_heads, -1).transpose(1, 2)
    v = value.view(B, T, kv_num_heads, -1).transpose(1, 2)
    if past_key is not None and past_value is not None:
        k, v = torch.cat([past_key, k], 2), torch.cat([past_value, v], 2)
    else:  # outputs must not alias inputs
        k, v = k.clone(memory_format=torch.contiguous_format), v.clone(memory_format=torch.contiguous_format)
    mask = None if key_mask is None else key_mask.to(torch.bool)
    out = attend(q, k, v, spec, mask)
    return out.transpose(1, 2).reshape(B, S, -1), k, v


@torch.library.custom_op("fastattn::attention", mutates_args=())
def _attention_op(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    past_key: torch.Tensor | None,
    past_value: torch.Tensor | None,
    key_mask: torch.Tensor | None,
    num_heads: int,
    kv_num_heads: int,
    causal: bool,
    window: int,
    global_tokens: int,
    scale: float,
    block: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return eager(query, key, value, past_key, past_value, key_mask, num_heads, kv_num_heads, causal, window,
                 global_tokens, scale, block)  # fmt: skip


@_attention_op.register_fake
def _(query, key, value, past_key, past_value, key_mask, num_heads, kv_num_heads, causal, window, global_tokens, scale,
      block=0):  # fmt: skip
    B, S, _ = query.shape
    T = key.shape[1]
    D, Dv = key.shape[-1] // kv_num_heads, value.shape[-1] // kv_num_heads
    total = T if past_key is None else past_key.shape[2] + T
    return (
        query.new_empty(B, S, num_heads * Dv),
        key.new_empty(B, kv_num_heads, total, D),
        value.new_empty(B, kv_num_heads, total, Dv),
    )


ATTENTION_OP = torch.ops.fastattn.attention.default


def attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    spec: AttentionSpec,
    past: tuple[torch.Tensor, torch.Tensor] | None = None,
    key_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """Run the fastattn op: returns the (B, S, Hq·Dv) output and the present (key, value)."""
    past_key, past_value = past if past is not None else (None, None)
    out, present_key, present_value = _attention_op(
        query, key, value, past_key, past_value, key_mask,
        spec.num_heads, spec.kv_num_heads, spec.causal, spec.window, spec.global_tokens, spec.scale, spec.block,
    )  # fmt: skip
    return out, (present_key, present_value)

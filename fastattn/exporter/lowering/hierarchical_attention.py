"""Hierarchical attention with ONNX ``Attention``-23: each query block against [summaries, own block].

The blocks, summaries and visibility of :mod:`.hierarchical`; the attention itself is one
``Attention``-23 call with the query blocks folded into the batch, (Bt·nq, Hq, B, D)
against (Bt·nq, Hkv, ns + B, D) keys: the ns summaries are repeated for every query block
(nq·ns·D per key/value head, ~4M floats at S=16384, B=64), which buys ORT's fused CPU kernel
(grouped heads, boolean mask, rows that see nothing as zeros). Both rules are measured per
site; this one needs opset 23, so the CPU and CUDA targets only (OpenVINO EP has no
``Attention``).
"""

from __future__ import annotations

import onnx_ir as ir

from fastattn.exporter.lowering.base import AttentionSite, Builder
from fastattn.exporter.lowering.hierarchical import Hierarchical, _Blocks
from fastattn.targets import Target


class HierarchicalAttention(Hierarchical):
    """Query blocks folded into the batch, one ONNX Attention-23 over [summaries, own block]."""

    name = "hierarchical-attention"
    min_opset = 23
    targets = frozenset({Target.CPU, Target.CUDA})

    def attend(self, site: AttentionSite, b: Builder, p: _Blocks) -> ir.Value:
        spec, size = site.spec, site.spec.block
        hkv, hq = spec.kv_num_heads, spec.num_heads
        batch = b.Shape(p.q, start=0, end=1)

        def per_block(summaries: ir.Value, own: ir.Value) -> ir.Value:
            """(Bt, Hkv, ns, D) and (Bt, Hkv, nq, B, D) -> (Bt*nq, Hkv, ns + B, D)."""
            shape = b.Concat(b.Shape(own, start=0, end=3), p.ns, b.Shape(summaries, start=3), axis=0)
            keys = b.Concat(b.Expand(b.Unsqueeze(summaries, b.ints(2)), shape), own, axis=3)
            keys = b.Transpose(keys, perm=[0, 2, 1, 3, 4])
            return b.Reshape(keys, b.Concat(b.ints(-1, hkv), b.Shape(keys, start=3), axis=0))

        q = b.Reshape(p.q, b.Concat(batch, b.ints(hq), p.nq, b.ints(size), b.Shape(p.q, start=4), axis=0))
        q = b.Transpose(q, perm=[0, 2, 1, 3, 4])  # (Bt, nq, Hq, B, D)
        q = b.Reshape(q, b.Concat(b.ints(-1, hq, size), b.Shape(q, start=4), axis=0))
        mask = b.Expand(p.see, b.Concat(batch, b.ints(1, 1, 1), axis=0))  # (Bt, nq, B, ns + B)
        mask = b.Reshape(mask, b.Concat(b.ints(-1, 1), b.Shape(mask, start=2), axis=0))
        out = b.Attention(q, per_block(p.sum_k, p.own_k), per_block(p.sum_v, p.own_v), mask,
                          scale=spec.scale or None)  # (Bt*nq, Hq, B, Dv)  # fmt: skip
        out = b.Reshape(out, b.Concat(batch, p.nq, b.ints(hq, size), b.Shape(out, start=3), axis=0))
        out = b.Transpose(out, perm=[0, 2, 1, 3, 4])  # (Bt, Hq, nq, B, Dv)
        return b.Reshape(out, b.Concat(batch, b.ints(hkv, spec.group_size, -1), b.Shape(out, start=4), axis=0))


HIERARCHICAL_ATTENTION = HierarchicalAttention()

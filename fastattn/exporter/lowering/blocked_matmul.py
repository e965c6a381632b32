"""Blocked sliding-window (and global + local) attention with MatMul/Softmax: blocked-local without ONNX Attention.

The same blocks, bands, global columns and masks as :mod:`.blocked_local` (O(S·W) work),
but each ``Attention``-23 call becomes grouped-head ``MatMul`` / ``Where`` / ``Softmax`` /
``MatMul`` and every op is one OpenVINO EP loads: onnxruntime-openvino 1.24.1 has no ONNX
``Attention`` ("does not support ... Attention"), no contrib ops, and refuses Pad-18's
``axes`` input, so queries are padded with full-rank pads. There is no ``If`` either (no
dense branch for short sequences): a band is clamped to the keys there are, so the blocked
form is exact at every length, including a decode step (one row against W keys).

Query heads are grouped against their key/value head, (N, Hkv, group, S, D), so keys are
never repeated; hidden keys get an additive -1e30 (:func:`~.graph_ops.score_bias`) and a
row that sees nothing comes out as zeros.
"""

from __future__ import annotations

import onnx_ir as ir

from fastattn.exporter.lowering.base import AttentionSite, Builder
from fastattn.exporter.lowering.blocked_local import BlockedLocal
from fastattn.exporter.lowering.graph_ops import pad_axis, score_bias, split_heads
from fastattn.targets import Target

FLOAT = ir.DataType.FLOAT.value


class BlockedMatMul(BlockedLocal):
    """Query blocks against key bands, attention spelled out in MatMul/Softmax (standard ops only)."""

    name = "blocked-matmul"
    contrib = False
    min_opset = 0
    # Where blocked-local runs (ONNX Attention-23) it is the faster form: on the CPU EP this one took
    # 121-133 ms against blocked-local's 56 ms (S=4096, W=256, 8/2 heads x 64, 2 threads, one run).
    targets = frozenset({Target.OPENVINO})

    def __init__(self, block: int | None = None):
        super().__init__(block, dense_ratio=0)

    def pad_queries(self, b: Builder, query: ir.Value, after: ir.Value) -> ir.Value:
        return pad_axis(b, query, 3, 1, None, after)

    def attend_packed(self, site: AttentionSite, b: Builder, query, key, value, mask) -> ir.Value:
        spec = site.spec
        out = self.attend_heads(site, b, split_heads(b, query, spec.num_heads), split_heads(b, key, spec.kv_num_heads),
                                split_heads(b, value, spec.kv_num_heads), mask)  # fmt: skip
        return b.Reshape(b.Transpose(out, perm=[0, 2, 1, 3]), b.ints(0, 0, -1))

    def attend_heads(self, site: AttentionSite, b: Builder, query, key, value, mask) -> ir.Value:
        spec = site.spec
        hkv, group = spec.kv_num_heads, spec.group_size
        scale = b.const(spec.scale, "float32") if spec.scale else b.Reciprocal(b.Sqrt(b.Cast(
            b.Shape(query, start=3), to=FLOAT)))  # fmt: skip
        grouped = lambda x: b.Reshape(x, b.Concat(b.Shape(x, start=0, end=1), b.ints(hkv, group),  # noqa: E731
                                                  b.Shape(x, start=2, end=4), axis=0))  # fmt: skip
        q = grouped(b.Mul(query, b.CastLike(scale, query)))  # (N, Hkv, g, S, D)
        k, v = b.Unsqueeze(key, b.ints(2)), b.Unsqueeze(value, b.ints(2))  # (N, Hkv, 1, T, D)
        scores = b.MatMul(q, b.Transpose(k, perm=[0, 1, 2, 4, 3]))  # (N, Hkv, g, S, T)
        heads = b.Concat(b.Shape(query, start=0, end=3), b.Shape(key, start=2, end=3), axis=0)
        bias, seen = score_bias(b, mask, query)  # (N|1, 1, S, T), (N|1, 1, S, 1)
        probs = b.Softmax(b.Add(b.Reshape(scores, heads), bias), axis=-1)  # (N, Hq, S, T)
        out = b.MatMul(grouped(probs), v)  # (N, Hkv, g, S, Dv)
        out = b.Reshape(out, b.Concat(b.Shape(query, start=0, end=3), b.ints(-1), axis=0))
        return b.Where(seen, out, b.CastLike(b.const(0.0, "float32"), out))


BLOCKED_MATMUL = BlockedMatMul()

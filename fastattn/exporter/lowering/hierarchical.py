"""Hierarchical attention in standard ONNX ops: O(S·(B + S/B)) work instead of the body's O(S·L).

The node's present keys (past slots, then the new keys split into heads) are cut at the
first raw slot n (the cache's summaries come first, :meth:`AttentionSpec.summaries`): the
raw keys, block-aligned at position nB, are padded to whole blocks of B and viewed as
(…, blocks, B, D); each block's summary is its masked mean, one ``MatMul`` of the
(…, 1, B) mask row against the block. Only the ``nq`` blocks that hold queries are
computed: their B queries score against their own B keys (one batched ``MatMul``, blocks
folded into the batch) and against the ``ns`` summaries (one ``MatMul`` over every query),
the two score sets share one ``Softmax``, and each part's probabilities multiply its
values. Grouped heads stay grouped, (B, Hkv, group, …), so keys are never repeated.

Masks come from positions: summary c is seen from block q when it is a real block (a
nonzero mask position in it) and c < q (causal) or c != q; a raw key when it is in the
query's block, not after it (causal), and not padding. Rows that see nothing come out as
zeros. Every op is in the default domain (MatMul, Softmax, Where, ReduceSum, Pad, ...), so
OpenVINO EP loads it too. B, S, P and T are read at run time: shapes stay dynamic.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx_ir as ir

from fastattn.exporter.lowering.base import OK, AttentionSite, Builder, LoweringRule, MatchResult
from fastattn.exporter.lowering.graph_ops import BOOL, INT64_MAX, arange, length, pad_axis, presents, score_bias
from fastattn.targets import Target

FLOAT = ir.DataType.FLOAT.value


@dataclass(frozen=True)
class _Blocks:
    """The query blocks of a site and what they attend to (1-D int64 lengths, then tensors)."""

    seq: ir.Value  # S
    front: ir.Value  # padding rows before the first query in its block
    nq: ir.Value  # blocks holding queries
    ns: ir.Value  # summaries: cached, then one per raw block
    q: ir.Value  # (Bt, Hkv, g, nq*B, D) unscaled, zero-padded to whole blocks
    own_k: ir.Value  # (Bt, Hkv, nq, B, D) each query block's own keys
    own_v: ir.Value
    sum_k: ir.Value  # (Bt, Hkv, ns, D)
    sum_v: ir.Value
    see: ir.Value  # (Bm, nq, B, ns + B) boolean: summaries then own keys


class Hierarchical(LoweringRule):
    """Own block + block summaries, blocks folded into the batch; standard ops only."""

    name = "hierarchical"
    contrib = False
    targets = frozenset({Target.CPU, Target.CUDA, Target.OPENVINO})

    def check(self, site: AttentionSite) -> MatchResult:
        if not site.spec.block:
            return MatchResult.fail("no block: not hierarchical attention")
        return OK

    def rewrite(self, site: AttentionSite, b: Builder) -> tuple[ir.Value, ir.Value | None, ir.Value | None]:
        key, value = presents(site, b)  # (Bt, Hkv, L, D)
        parts = self._blocks(site, b, key, value)
        out = self.attend(site, b, parts)  # (Bt, Hkv, g, nq*B, Dv)
        out = b.Slice(out, parts.front, b.Add(parts.front, parts.seq), b.ints(3))  # the S queries
        out = b.Reshape(b.Transpose(out, perm=[0, 3, 1, 2, 4]), b.ints(0, 0, -1))  # (Bt, S, Hq*Dv)
        return (out, key, value) if site.presents_used else (out, None, None)

    def attend(self, site: AttentionSite, b: Builder, p: _Blocks) -> ir.Value:
        """Scores against the summaries (one MatMul over every query) and the own block (one batched
        MatMul), one Softmax over both: (Bt, Hkv, g, nq*B, Dv)."""
        spec, size = site.spec, site.spec.block
        head = b.Cast(b.Shape(p.q, start=4), to=FLOAT)
        scale = b.const(spec.scale, "float32") if spec.scale else b.Reciprocal(b.Sqrt(head))
        q = b.Mul(p.q, b.CastLike(scale, p.q))
        q_blocks = b.Reshape(q, b.Concat(b.ints(0, 0, 0), p.nq, b.ints(size, -1), axis=0))
        local = b.MatMul(q_blocks, b.Transpose(b.Unsqueeze(p.own_k, b.ints(2)), perm=[0, 1, 2, 3, 5, 4]))
        summary = b.MatMul(q, b.Transpose(b.Unsqueeze(p.sum_k, b.ints(2)), perm=[0, 1, 2, 4, 3]))
        summary = b.Reshape(summary, b.Concat(b.ints(0, 0, 0), p.nq, b.ints(size), p.ns, axis=0))  # (.., nq, B, ns)
        see = b.Unsqueeze(p.see, b.ints(1, 2))  # (Bm, 1, 1, nq, B, ns + B)
        bias, seen = score_bias(b, see, q)
        probs = b.Softmax(b.Add(b.Concat(summary, local, axis=-1), bias), axis=-1)
        p_summary = b.Reshape(b.Slice(probs, b.ints(0), p.ns, b.ints(-1)), b.Concat(b.ints(0, 0, 0, -1), p.ns, axis=0))
        out = b.MatMul(p_summary, b.Unsqueeze(p.sum_v, b.ints(2)))  # (Bt, Hkv, g, nq*B, Dv)
        mine = b.MatMul(b.Slice(probs, p.ns, b.ints(INT64_MAX), b.ints(-1)), b.Unsqueeze(p.own_v, b.ints(2)))
        out = b.Add(out, b.Reshape(mine, b.Concat(b.ints(0, 0, 0, -1), b.Shape(mine, start=5), axis=0)))
        seen = b.Reshape(seen, b.Concat(b.Shape(seen, start=0, end=3), b.ints(-1, 1), axis=0))  # (Bm, 1, 1, nq*B, 1)
        return b.Where(seen, out, b.CastLike(b.const(0.0, "float32"), out))  # rows that see nothing

    def _blocks(self, site: AttentionSite, b: Builder, key: ir.Value, value: ir.Value) -> _Blocks:
        """Where the blocks are, the raw keys in whole blocks, the summaries and the visibility."""
        spec = site.spec
        size = spec.block
        slots = length(b, key, 2)
        total = slots if site.key_mask is None else length(b, site.key_mask, 1)  # N positions
        seq = length(b, site.query, 1)
        n = b.Div(b.Sub(total, slots), b.ints(size - 1))  # leading summary slots
        raw = b.Sub(slots, n)  # raw keys: positions nB..N-1
        blocks = b.Div(b.Add(raw, b.ints(size - 1)), b.ints(size))
        first = b.Sub(raw, seq)  # raw index of the first query
        qb0 = b.Div(first, b.ints(size))  # first block holding a query
        nq = b.Sub(blocks, qb0)
        front = b.Sub(first, b.Mul(qb0, b.ints(size)))
        ns = b.Add(n, blocks)

        tail = b.Sub(b.Mul(blocks, b.ints(size)), raw)
        grid = lambda x: b.Reshape(  # noqa: E731  (Bt, Hkv, L, D) -> (Bt, Hkv, blocks, B, D)
            pad_axis(b, b.Slice(x, n, b.ints(INT64_MAX), b.ints(2)), 4, 2, None, tail),
            b.Concat(b.ints(0, 0), blocks, b.ints(size, -1), axis=0),
        )  # fmt: skip
        kb, vb = grid(key), grid(value)
        real = self._raw_mask(site, b, n, raw, blocks, total)  # (Bm, blocks, B) float
        count = b.ReduceSum(real, b.ints(2), keepdims=0)  # (Bm, blocks)
        denom = b.Unsqueeze(b.Max(count, b.const(1.0, "float32")), b.ints(1, 3))  # (Bm, 1, blocks, 1)
        rows = b.Unsqueeze(real, b.ints(1, 3))  # (Bm, 1, blocks, 1, B)
        summarize = lambda x, blocked: b.Concat(  # noqa: E731  cached summaries, then the raw blocks' means
            b.Slice(x, b.ints(0), n, b.ints(2)),
            b.Div(b.Squeeze(b.MatMul(b.CastLike(rows, x), blocked), b.ints(3)), b.CastLike(denom, x)),
            axis=2,
        )  # fmt: skip

        q = b.Transpose(b.Reshape(site.query, b.ints(0, 0, spec.kv_num_heads, spec.group_size, -1)),
                        perm=[0, 2, 3, 1, 4])  # (Bt, Hkv, g, S, D)  # fmt: skip
        back = b.Sub(b.Sub(b.Mul(nq, b.ints(size)), seq), front)
        return _Blocks(
            seq, front, nq, ns, pad_axis(b, q, 5, 3, front, back),
            b.Slice(kb, qb0, blocks, b.ints(2)), b.Slice(vb, qb0, blocks, b.ints(2)),
            summarize(key, kb), summarize(value, vb), self._visible(site, b, n, qb0, nq, ns, blocks, real),
        )  # fmt: skip

    @staticmethod
    def _raw_mask(site: AttentionSite, b: Builder, n, raw, blocks, total) -> ir.Value:
        """(Bm, blocks, B) float: 1 where a raw block position holds a real key (Bm = 1 without a mask)."""
        size = site.spec.block
        shape = b.Concat(b.ints(0), blocks, b.ints(size), axis=0)
        if site.key_mask is None:
            inside = b.Less(arange(b, b.ints(0), b.Mul(blocks, b.ints(size))), b.Squeeze(raw, b.ints(0)))
            return b.Reshape(b.Cast(b.Unsqueeze(inside, b.ints(0)), to=FLOAT), shape)
        mask = b.Cast(b.Cast(site.key_mask, to=BOOL), to=FLOAT)
        tail = b.Slice(mask, b.Mul(n, b.ints(size)), total, b.ints(1))
        pad = b.Sub(b.Mul(blocks, b.ints(size)), raw)
        return b.Reshape(pad_axis(b, tail, 2, 1, None, pad), shape)

    @staticmethod
    def _visible(site: AttentionSite, b: Builder, n, qb0, nq, ns, blocks, real) -> ir.Value:
        """(Bm, nq, B, ns + B) boolean: the summaries, then the own-block keys, each query block sees."""
        spec, size = site.spec, site.spec.block
        q_block = b.Unsqueeze(b.Add(b.Add(n, qb0), arange(b, b.ints(0), nq)), b.ints(1))  # (nq, 1)
        c = arange(b, b.ints(0), ns)
        other = b.Less(c, q_block) if spec.causal else b.Not(b.Equal(c, q_block))  # (nq, ns)
        if site.key_mask is not None:  # a summary exists when its block has a real key
            mask = b.Cast(b.Cast(site.key_mask, to=BOOL), to=FLOAT)
            head = b.Slice(mask, b.ints(0), b.Mul(n, b.ints(size)), b.ints(1))
            cached = b.ReduceSum(b.Reshape(head, b.Concat(b.ints(0), n, b.ints(size), axis=0)), b.ints(2), keepdims=0)
            counts = b.Concat(cached, b.ReduceSum(real, b.ints(2), keepdims=0), axis=1)  # (Bm, ns)
            other = b.And(other, b.Unsqueeze(b.Greater(counts, b.const(0.0, "float32")), b.ints(1)))  # (Bm, nq, ns)
        own = b.Cast(b.Unsqueeze(b.Slice(real, qb0, blocks, b.ints(1)), b.ints(2)), to=BOOL)  # (Bm, nq, 1, B)
        if spec.causal:
            rows = arange(b, b.ints(0), b.ints(size))
            own = b.And(own, b.LessOrEqual(rows, b.Unsqueeze(rows, b.ints(1))))  # (Bm, nq, B, B)
        else:
            own = b.Expand(own, b.Concat(b.ints(1, 1), b.ints(size, size), axis=0))
        other = b.Expand(b.Unsqueeze(other, b.ints(-2)), b.Concat(b.Shape(own, start=0, end=3), ns, axis=0))
        return b.Concat(other, own, axis=-1)


HIERARCHICAL = Hierarchical()

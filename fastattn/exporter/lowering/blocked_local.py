"""Blocked sliding-window attention in standard ONNX ops: O(S·W) work instead of O(S·L).

The S queries are cut into blocks of ``Wq = min(S, block)`` rows (:func:`block_size`).
Block i sees at most ``band = Wq + (W-1)`` keys (``+ (W-1)`` more when bidirectional),
starting W-1 keys before its first query; the start is clamped into 0..L-band, so every
band entry is a real key and a decode step (S = 1) reads exactly the last W keys. One
``Gather`` per key/value cuts the bands out of the packed keys (the tail of the past the
first band reaches, then the new keys), the blocks are folded into the batch, and ONE ONNX
``Attention``-23 call does them all, with a (B·nb, 1, Wq, band) boolean mask from positions
(window, causal, key padding). B, S, P and T are read at run time: shapes stay dynamic.

Global tokens (``global_tokens`` G): the first G keys are G extra columns of every band
(gathered by the same ``Gather``; band keys before G are masked so none counts twice).
Causal global query rows see only keys < G, which are those columns; bidirectional ones see
every key: the first min(G, S) query rows are recomputed densely against all L keys
(O(G·L)) and replace the blocked rows.

Blocks pay only when the keys outnumber a block's columns: the rule emits ``If(2 ·
columns <= L, blocked, onnx-attention)`` (about equal at 2x on ORT 1.32 CPU; below it the
band copies cost more than the keys they skip, and a window wider than the sequence
would make every band all of the keys).

Rows that see no key come out as zeros (ONNX ``Attention``'s fully-masked rows). Work and
memory are linear in S: scores (B·nb, Hq, Wq, G + band), bands 1.3-3x the keys.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx_ir as ir

from fastattn.exporter.lowering.base import OK, AttentionSite, Builder, LoweringRule, MatchResult
from fastattn.exporter.lowering.graph_ops import (
    INT64_MAX,
    Lengths,
    arange,
    key_mask_bool,
    lengths,
    merge_heads,
    presents,
    split_heads,
    visible,
    window_bounds,
)
from fastattn.exporter.lowering.onnx_attention import ONNX_ATTENTION

Outputs = tuple[ir.Value, ir.Value | None, ir.Value | None]  # output, present_key, present_value


class BlockedLocal(LoweringRule):
    """Sliding window (and global + local) as query blocks against key bands, one Attention-23."""

    name = "blocked-local"
    contrib = False
    min_opset = 23

    def __init__(self, block: int | None = None, dense_ratio: int = 2):
        self.block = block  # queries per block; None = :func:`block_size` of the window
        # keys/columns ratio below which the dense form runs instead; 0 = always blocked
        self.dense_ratio = dense_ratio

    def check(self, site: AttentionSite) -> MatchResult:
        if site.spec.block:
            return MatchResult.fail("hierarchical attention: blocks see summaries, not a band of keys")
        if not site.spec.window:
            return MatchResult.fail("no window: every query sees every key, there is no band to cut")
        return OK

    def rewrite(self, site: AttentionSite, b: Builder) -> Outputs:
        """``If(blocks pay, blocked, dense)``: blocked where all keys number at least ``dense_ratio``
        times a block's columns, else :data:`ONNX_ATTENTION` (as much work, no band copies)."""
        spec = site.spec
        block = self.block or block_size(spec.window)
        if not self.dense_ratio:
            return self.blocked(site, b, block)
        n = lengths(site, b)
        columns = b.Add(b.Min(n.seq, b.ints(block)), b.ints(_reach(spec) + spec.global_tokens))
        pays = b.Squeeze(b.LessOrEqual(b.Mul(columns, b.ints(self.dense_ratio)), n.total), b.ints(0))
        blocked, dense = Builder(), Builder()
        branches = [self.blocked(site, blocked, block), ONNX_ATTENTION.rewrite(site, dense)]
        count = 3 if site.presents_used else 1
        then_branch, else_branch = (
            ir.Graph([], list(outputs[:count]), nodes=sub.nodes, name=f"{site.node.name}_{name}")
            for sub, outputs, name in zip((blocked, dense), branches, ("blocked", "dense"))
        )
        results = b.If(pays, then_branch=then_branch, else_branch=else_branch, _outputs=count)
        return tuple(results) if count == 3 else (results, None, None)

    def blocked(self, site: AttentionSite, b: Builder, block: int) -> Outputs:
        """The blocked form alone: (output, present_key, present_value); presents only when used."""
        spec = site.spec
        n = lengths(site, b)
        g = _geometry(site, b, n, block)
        queries = self.pad_queries(b, site.query, b.Sub(b.Mul(g.blocks, g.rows), n.seq))  # (B, nb*Wq, Hq*D)
        queries = b.Reshape(queries, b.Concat(b.ints(-1), g.rows, b.Shape(site.query, start=2), axis=0))
        folded = []  # (B*nb, columns, Hkv*D) keys and values
        for new, past in ((site.key, site.past_key), (site.value, site.past_value)):
            bands = b.Gather(_key_source(b, g, new, past), g.index, axis=1)
            folded.append(b.Reshape(bands, b.Concat(b.ints(-1), g.columns, b.Shape(new, start=2), axis=0)))
        mask = b.Reshape(_block_mask(site, b, n, g), b.Concat(b.ints(-1, 1), g.rows, g.columns, axis=0))
        out = self.attend_packed(site, b, queries, *folded, mask)
        # (B*nb, Wq, Hq*Dv) -> (B, S, Hq*Dv)
        out = b.Slice(b.Reshape(out, b.Concat(n.batch, b.ints(-1, 0), axis=0)), b.ints(0), n.seq, b.ints(1))
        dense = spec.global_tokens and not spec.causal  # bidirectional global rows see beyond any band
        present_key, present_value = presents(site, b) if site.presents_used or dense else (None, None)
        if dense:
            rows = _global_rows(site, b, n, present_key, present_value, self.attend_heads)
            rest = b.Slice(out, b.Shape(rows, start=1, end=2), b.ints(INT64_MAX), b.ints(1))
            out = b.Concat(rows, rest, axis=1)
        return out, present_key, present_value

    # The kernel of the blocks; a subclass may emit it otherwise (blocked_matmul: MatMul/Softmax).

    def pad_queries(self, b: Builder, query: ir.Value, after: ir.Value) -> ir.Value:
        """(B, S, Hq*D) zero-padded by ``after`` rows."""
        return b.Pad(query, b.Concat(b.ints(0), after, axis=0), None, b.ints(1))

    def attend_packed(self, site: AttentionSite, b: Builder, query, key, value, mask) -> ir.Value:
        """Packed (N, S, H*D) query/key/value with a (N, 1, S, T) boolean mask -> (N, S, Hq*Dv)."""
        spec = site.spec
        return b.Attention(query, key, value, mask, q_num_heads=spec.num_heads, kv_num_heads=spec.kv_num_heads,
                           scale=spec.scale or None)  # fmt: skip

    def attend_heads(self, site: AttentionSite, b: Builder, query, key, value, mask) -> ir.Value:
        """(B, Hq, S, D) query over (B, Hkv, T, D) keys with a mask broadcastable to (B, 1, S, T) -> (B, Hq, S, Dv)."""
        return b.Attention(query, key, value, mask, scale=site.spec.scale or None)


def _reach(spec) -> int:
    """Keys a block sees beyond its own rows."""
    return (spec.window - 1) * (1 if spec.causal else 2)


def block_size(window: int) -> int:
    """Queries per block: the window, within 32..128 rows.

    A block of Wq rows costs Wq + W - 1 keys per query (causal), so small blocks waste less,
    but below ~32 rows the per-block GEMMs are inefficient and above ~128 the score tile
    leaves the cache. ORT 1.32 CPU, 2 threads, S=8192, H=8, D=64 (ms by rows per block):
    W=32: 16 rows 16.9, 32 15.3, 64 15.3, 128 18.4; W=256: 64 34.4, 128 33.3, 256 37.7;
    W=1024: 64 112, 128 93, 256 91, 512 108, 1024 302.
    """
    return min(max(window, 32), 128)


@dataclass(frozen=True)
class _Geometry:
    """Where the blocks are (all int64 tensors)."""

    rows: ir.Value  # Wq, queries per block
    blocks: ir.Value  # nb
    columns: ir.Value  # keys per block: G' + band
    start: ir.Value  # position of the first key of the banded part of :func:`_key_source`
    globals_: ir.Value | None  # G' = min(G, L)
    qpos: ir.Value  # (nb, Wq, 1) query positions
    gpos: ir.Value | None  # (G',) global key positions
    kpos: ir.Value  # (nb, band) band key positions
    positions: ir.Value  # (nb, columns) every key column's position
    index: ir.Value  # (nb, columns) every key column's row in :func:`_key_source`


def _geometry(site: AttentionSite, b: Builder, n: Lengths, block: int) -> _Geometry:
    spec = site.spec
    rows = b.Min(n.seq, b.ints(block))
    blocks = b.Div(b.Add(n.seq, b.Sub(rows, b.ints(1))), rows)
    band = b.Min(b.Add(rows, b.ints(_reach(spec))), n.total)
    block_first = b.Add(n.first, b.Mul(arange(b, b.ints(0), blocks), rows))  # (nb,) first query
    first_key = b.Sub(block_first, b.ints(spec.window - 1))
    first_key = b.Min(b.Max(first_key, b.ints(0)), b.Sub(n.total, band))  # every band key is real
    qpos = b.Unsqueeze(b.Add(b.Unsqueeze(block_first, b.ints(1)), arange(b, b.ints(0), rows)), b.ints(2))
    kpos = b.Add(b.Unsqueeze(first_key, b.ints(1)), arange(b, b.ints(0), band))
    # the banded part of the source: the past from the first band's first key on (none of it
    # when that key is new), then the new keys; bands only move right along the blocks
    start = b.ints(0) if n.past is None else b.Min(b.Slice(first_key, b.ints(0), b.ints(1)), n.past)
    index = b.Sub(kpos, start)
    if not spec.global_tokens:
        return _Geometry(rows, blocks, band, start, None, qpos, None, kpos, kpos, index)
    globals_ = b.Min(b.ints(spec.global_tokens), n.total)
    gpos = arange(b, b.ints(0), globals_)
    per_block = b.Expand(b.Unsqueeze(gpos, b.ints(0)), b.Concat(blocks, b.ints(1), axis=0))  # (nb, G')
    positions = b.Concat(per_block, kpos, axis=1)
    index = b.Concat(per_block, b.Add(index, globals_), axis=1)
    return _Geometry(rows, blocks, b.Add(globals_, band), start, globals_, qpos, gpos, kpos, positions, index)


def _block_mask(site: AttentionSite, b: Builder, n: Lengths, g: _Geometry) -> ir.Value:
    """(B, nb, Wq, columns) boolean: the window inside the band, global columns, key padding."""
    spec = site.spec
    lo, hi = window_bounds(site, b, g.qpos)
    if spec.global_tokens:  # band keys before G are already global columns
        lo = b.Max(lo, b.const(spec.global_tokens - 1, "int64"))
    kpos = b.Unsqueeze(g.kpos, b.ints(1))  # (nb, 1, band)
    mask = b.And(b.Greater(kpos, lo), b.LessOrEqual(kpos, hi))
    if g.gpos is not None:  # g <= hi: before the query when causal; always for the rows that use it
        mask = b.Concat(b.LessOrEqual(g.gpos, hi), mask, axis=2)
    keys = key_mask_bool(site, b)
    if keys is None:
        return b.Expand(mask, b.Concat(n.batch, b.ints(1, 1, 1), axis=0))
    return b.And(mask, b.Unsqueeze(b.Gather(keys, g.positions, axis=1), b.ints(2)))


def _key_source(b: Builder, g: _Geometry, new: ir.Value, past: ir.Value | None) -> ir.Value:
    """(B, G' + L - start, Hkv*D) packed: the G' global keys, then keys from position ``start`` on."""
    width = b.Shape(new, start=2)
    source = new
    if past is not None:
        tail = b.Slice(past, g.start, b.ints(INT64_MAX), b.ints(2))
        source = b.Concat(merge_heads(b, tail, width), new, axis=1)
    if g.globals_ is None:
        return source
    first = b.Slice(new, b.ints(0), g.globals_, b.ints(1))
    if past is not None:
        head = merge_heads(b, b.Slice(past, b.ints(0), g.globals_, b.ints(2)), width)
        first = b.Slice(b.Concat(head, first, axis=1), b.ints(0), g.globals_, b.ints(1))
    return b.Concat(first, source, axis=1)


def _global_rows(site: AttentionSite, b: Builder, n: Lengths, present_key: ir.Value, present_value: ir.Value, attend):
    """The first min(G, S) query rows against all L keys, with the op's full mask: (B, m, Hq*Dv)."""
    spec = site.spec
    m = b.Min(b.ints(spec.global_tokens), n.seq)
    query = split_heads(b, b.Slice(site.query, b.ints(0), m, b.ints(1)), spec.num_heads)
    qpos = b.Unsqueeze(arange(b, n.first, b.Add(n.first, m)), b.ints(1))
    mask = visible(site, b, qpos, arange(b, b.ints(0), n.total))  # (m, L)
    keys = key_mask_bool(site, b)
    if keys is not None:
        mask = b.And(mask, b.Unsqueeze(keys, b.ints(1, 2)))
    out = attend(site, b, query, present_key, present_value, mask)
    return b.Reshape(b.Transpose(out, perm=[0, 2, 1, 3]), b.ints(0, 0, -1))


BLOCKED_LOCAL = BlockedLocal()

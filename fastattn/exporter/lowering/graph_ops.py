"""Graph-building helpers shared by the lowering rules: lengths, heads, presents, positions, masks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from fastattn.exporter.lowering.base import MS, AttentionSite, Builder

BOOL = ir.DataType.BOOL.value
INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class Lengths:
    """Sequence lengths of a site as 1-D int64 tensors of one element (for Concat / Range)."""

    batch: ir.Value
    seq: ir.Value  # S, queries
    total: ir.Value  # L = P + T, keys
    past: ir.Value | None  # P, None without a cache
    first: ir.Value  # L - S, the position of the first query


def lengths(site: AttentionSite, b: Builder) -> Lengths:
    seq = b.Shape(site.query, start=1, end=2)
    total = b.Shape(site.key, start=1, end=2)
    past = None
    if site.past_key is not None:
        past = b.Shape(site.past_key, start=2, end=3)
        total = b.Add(past, total)
    return Lengths(b.Shape(site.query, start=0, end=1), seq, total, past, b.Sub(total, seq))


def scalar(b: Builder, x: ir.Value) -> ir.Value:
    """A one-element 1-D tensor as a scalar (Range takes scalars)."""
    return b.Squeeze(x, b.ints(0))


def arange(b: Builder, start: ir.Value, stop: ir.Value) -> ir.Value:
    """``Range(start, stop, 1)`` of two one-element int64 tensors."""
    return b.Range(scalar(b, start), scalar(b, stop), b.const(np.int64(1)))


def pad_axis(b: Builder, x: ir.Value, rank: int, axis: int, before: ir.Value | None, after: ir.Value) -> ir.Value:
    """Zero-pad ``x`` (of ``rank`` dims) along ``axis`` by the (1,) int64 ``before`` / ``after``.

    Full-rank ``pads``, no ``axes`` input: OpenVINO EP (onnxruntime-openvino 1.24.1) refuses
    Pad-18's ``axes`` ("length of pads_begin mismatches with rank of input").
    """
    axis %= rank
    zeros = lambda k: [b.ints(*([0] * k))] if k else []  # noqa: E731
    begin = [*zeros(axis), before if before is not None else b.ints(0), *zeros(rank - axis - 1)]
    end = [*zeros(axis), after, *zeros(rank - axis - 1)]
    return b.Pad(x, b.Concat(*begin, *end, axis=0))


def split_heads(b: Builder, x: ir.Value, heads: int) -> ir.Value:
    """(B, T, H*D) -> (B, H, T, D)."""
    return b.Transpose(b.Reshape(x, b.ints(0, 0, heads, -1)), perm=[0, 2, 1, 3])


def merge_heads(b: Builder, x: ir.Value, width: ir.Value) -> ir.Value:
    """(B, H, T, D) -> (B, T, width = H*D); ``width`` is a 1-D tensor, so T may be 0.

    The target shape is spelled out with ``allowzero=1``: ORT's reshape fusion rewrites a
    ``(0, 0, width)`` shape into ``(0, 0, -1)``, which fails when T is 0 (an empty cache).
    """
    moved = b.Transpose(x, perm=[0, 2, 1, 3])
    return b.Reshape(moved, b.Concat(b.Shape(moved, start=0, end=2), width, axis=0), allowzero=1)


def presents(site: AttentionSite, b: Builder) -> tuple[ir.Value, ir.Value]:
    """The op's present key/value: the past (if any) followed by the new keys, split into heads."""
    hkv = site.spec.kv_num_heads
    key, value = split_heads(b, site.key, hkv), split_heads(b, site.value, hkv)
    if site.past_key is None:
        return key, value
    return b.Concat(site.past_key, key, axis=2), b.Concat(site.past_value, value, axis=2)


def key_mask_bool(site: AttentionSite, b: Builder) -> ir.Value | None:
    """The (B, L) key mask as booleans (nonzero = attend), or None."""
    return None if site.key_mask is None else b.Cast(site.key_mask, to=BOOL)


def visible(site: AttentionSite, b: Builder, qpos: ir.Value, kpos: ir.Value) -> ir.Value | None:
    """Which keys each query sees by position (causal, window, global tokens), broadcasting
    ``qpos`` against ``kpos``; None when every query sees every key.

    The window is a pair of bounds per query, lo < key <= hi, so the full-size tensors are
    booleans from comparisons, never int64 distances.
    """
    spec = site.spec
    W, G = spec.window, spec.global_tokens
    if not W:
        return b.LessOrEqual(kpos, qpos) if spec.causal else None
    lo, hi = window_bounds(site, b, qpos)
    if G:  # global query rows see every key (before them, when causal)
        global_row = b.Less(qpos, b.const(G, "int64"))
        lo = b.Where(global_row, b.const(-1, "int64"), lo)
        if not spec.causal:
            hi = b.Where(global_row, b.const(INT64_MAX, "int64"), hi)
    if not G:
        return b.And(b.Greater(kpos, lo), b.LessOrEqual(kpos, hi))
    global_key = b.Less(kpos, b.const(G, "int64"))  # seen by every query (looking back, when causal)
    if spec.causal:
        return b.And(b.LessOrEqual(kpos, hi), b.Or(b.Greater(kpos, lo), global_key))
    return b.Or(b.And(b.Greater(kpos, lo), b.LessOrEqual(kpos, hi)), global_key)


HIDDEN = -1e30  # additive score of a hidden key: exp underflows to exactly 0, and stays finite


def score_bias(b: Builder, see: ir.Value, like: ir.Value) -> tuple[ir.Value, ir.Value]:
    """(bias, seen): 0 / :data:`HIDDEN` scores where ``see`` is true / false, and a keepdims boolean
    per row that is true when the row sees any key (rows that see nothing must output zeros).

    An added bias and one ``Softmax`` cost one pass over the scores where ``Where(see, scores,
    -inf)``, ``Softmax`` and ``Where(see, probs, 0)`` cost two: 67 vs 120 ms (OpenVINO EP) and
    124 vs 216 ms (CPU EP) for blocked sliding-window attention at S=4096, W=256, 8/2 heads x 64.
    """
    bias = b.Where(see, b.CastLike(b.const(0.0, "float32"), like), b.CastLike(b.const(HIDDEN, "float32"), like))
    seen = b.Greater(b.ReduceMax(bias, b.ints(-1), keepdims=1), b.CastLike(b.const(-1.0, "float32"), like))
    return bias, seen


def window_bounds(site: AttentionSite, b: Builder, qpos: ir.Value) -> tuple[ir.Value, ir.Value]:
    """The window of each query as ``lo < key <= hi``: |p - j| < W, and j <= p when causal."""
    W = site.spec.window
    lo = b.Sub(qpos, b.const(W, "int64"))
    hi = qpos if site.spec.causal else b.Add(qpos, b.const(W - 1, "int64"))
    return lo, hi


def is_self_attention(site: AttentionSite) -> bool:
    """Query and key share their sequence dim (same symbol or same size) in the graph."""
    q, k = site.query.shape, site.key.shape
    return q is not None and k is not None and len(q) == len(k) == 3 and q[1] == k[1]


def import_contrib_domain(site: AttentionSite) -> None:
    """The model must import com.microsoft for ORT to resolve contrib ops."""
    graph = site.node.graph
    if graph is not None:
        graph.opset_imports.setdefault(MS, 1)


def length(b: Builder, value: ir.Value, axis: int) -> ir.Value:
    """(1,) int64: the size of ``value`` along ``axis``."""
    return b.Shape(value, start=axis, end=axis + 1)


def same_dim(x: ir.Value, y: ir.Value, axis: int) -> bool:
    """Whether two values provably have one size along ``axis`` (equal ints, or one named dim)."""
    if x.shape is None or y.shape is None or len(x.shape) <= axis or len(y.shape) <= axis:
        return False
    a, c = x.shape[axis], y.shape[axis]
    if isinstance(a, int) or isinstance(c, int):
        return a == c
    return a.value is not None and a.value == c.value


def take_over(old: ir.Value, new: ir.Value) -> None:
    """``new`` replaces ``old`` everywhere; a graph output keeps its name, type and shape."""
    if old.is_graph_output():
        name, shape, type_ = old.name, old.shape, old.type
        old.name = None
        new.name, new.shape, new.type = name, shape, new.type or type_
    old.replace_all_uses_with(new, replace_graph_outputs=True)


def add_initializer(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    """A new initializer holding ``array``, named ``name`` (suffixed with ``_`` until unique)."""
    while name in graph.initializers:
        name += "_"
    dtype = ir.TensorType(ir.DataType.from_numpy(array.dtype))
    value = ir.Value(name=name, shape=ir.Shape(array.shape), type=dtype)
    value.const_value = ir.tensor(array, name=name)
    graph.register_initializer(value)
    return value

"""The portable ONNX bodies of hierarchical ``fastattn::Attention`` (``block`` > 0).

Four overloads like the other kinds (``hierarchical``, ``hierarchical_mask``,
``hierarchical_past``, ``hierarchical_past_mask``), all calling ``HierarchicalCore``:
dense attention of every query over [one summary per block, every raw key], masked by
the rules of the kind (see :mod:`fastattn.attention.spec`). Exact for every input and
O(S·(S/B + L)) work, i.e. quadratic in prefill: lowering rules replace it
(:mod:`fastattn.exporter.lowering.hierarchical`).

The key mask spans every position (N); the first n = (N - L)/(B - 1) of the L cache slots
are summaries of blocks 0..n-1 (a compact cache), the others the keys of positions nB..N-1.
Without a key mask N = L: a whole cache.
"""

from __future__ import annotations

import onnxscript
from onnxscript import opset18 as op

from fastattn.attention.onnx_function import DOMAIN, VERSION, _split_heads

_fa = onnxscript.values.Opset(DOMAIN, VERSION)


@onnxscript.script(_fa, default_opset=op)
def HierarchicalCore(
    query, present_key, present_value, key_mask, num_heads: int, kv_num_heads: int,
    causal: int = 0, block: int = 0, scale: float = 0.0,
):  # fmt: skip
    """(B,S,Hq*D) query over (B,Hkv,L,D) cache slots; key_mask (B or 1, N) over every position."""
    zero = op.Constant(value_ints=[0])
    one = op.Constant(value_ints=[1])
    minus1 = op.Constant(value_ints=[-1])
    hkv = op.Unsqueeze(op.Constant(value_int=kv_num_heads), zero)
    group = op.Div(op.Unsqueeze(op.Constant(value_int=num_heads), zero), hkv)
    q = op.Transpose(op.Reshape(query, op.Concat(zero, zero, hkv, group, minus1, axis=0)), perm=[0, 2, 3, 1, 4])
    size = op.Unsqueeze(op.Constant(value_int=block), zero)  # B, (1,)
    slots = op.Shape(present_key, start=2, end=3)  # L
    total = op.Shape(key_mask, start=1, end=2)  # N
    seq = op.Shape(query, start=1, end=2)  # S
    n = op.Div(op.Sub(total, slots), op.Sub(size, one))  # summaries in the cache
    raw_first = op.Mul(n, size)  # position of the first raw key
    blocks = op.Div(op.Add(total, op.Sub(size, one)), size)  # every block, partial last one included
    real = op.Cast(key_mask, to=9)
    realf = op.CastLike(real, query)
    padded = op.Pad(realf, op.Concat(zero, zero, zero, op.Sub(op.Mul(blocks, size), total), axis=0))
    per_block = op.Reshape(padded, op.Concat(zero, blocks, size, axis=0))  # (Bm, blocks, B)
    count = op.ReduceSum(per_block, op.Constant(value_ints=[2]), keepdims=0)  # (Bm, blocks)
    valid = op.Greater(count, op.CastLike(op.Constant(value_float=0.0), count))
    # summaries of the raw blocks: masked means over the block axis
    raw_k = op.Slice(present_key, n, slots, op.Constant(value_ints=[2]))
    raw_v = op.Slice(present_value, n, slots, op.Constant(value_ints=[2]))
    raw_blocks = op.Sub(blocks, n)
    tail = op.Sub(op.Mul(raw_blocks, size), op.Sub(slots, n))
    pads = op.Concat(zero, zero, zero, zero, zero, zero, tail, zero, axis=0)
    grid = op.Concat(zero, zero, raw_blocks, size, minus1, axis=0)
    weights = op.Unsqueeze(op.Slice(per_block, n, blocks, one), op.Constant(value_ints=[1, 4]))  # (Bm,1,nb,B,1)
    denom = op.Max(op.Slice(count, n, blocks, one), op.CastLike(op.Constant(value_float=1.0), count))
    denom = op.Unsqueeze(denom, op.Constant(value_ints=[1, 3]))  # (Bm, 1, nb, 1)
    axis3 = op.Constant(value_ints=[3])
    sum_k = op.Div(op.ReduceSum(op.Mul(op.Reshape(op.Pad(raw_k, pads), grid), weights), axis3, keepdims=0), denom)
    sum_v = op.Div(op.ReduceSum(op.Mul(op.Reshape(op.Pad(raw_v, pads), grid), weights), axis3, keepdims=0), denom)
    cut = op.Constant(value_ints=[2])
    keys = op.Concat(op.Slice(present_key, zero, n, cut), sum_k, raw_k, axis=2)  # (B, Hkv, blocks + R, D)
    values = op.Concat(op.Slice(present_value, zero, n, cut), sum_v, raw_v, axis=2)
    keys = op.Unsqueeze(keys, cut)
    values = op.Unsqueeze(values, cut)
    head_size = op.Cast(op.Shape(q, start=4), to=1)
    attr_scale = op.Constant(value_float=scale)
    s = op.Where(op.Equal(attr_scale, op.Constant(value_float=0.0)), op.Reciprocal(op.Sqrt(head_size)), attr_scale)
    scores = op.Mul(op.MatMul(q, op.Transpose(keys, perm=[0, 1, 2, 4, 3])), op.CastLike(s, query))
    # which summary / raw key each query sees
    one_i = op.Constant(value_int=1)
    total_i = op.Squeeze(total, zero)
    qpos = op.Unsqueeze(op.Range(op.Squeeze(op.Sub(total, seq), zero), total_i, one_i), one)  # (S, 1)
    q_block = op.Div(qpos, size)
    c = op.Range(op.Constant(value_int=0), op.Squeeze(blocks, zero), one_i)
    is_causal = op.Equal(op.Constant(value_int=causal), op.Constant(value_int=1))
    other = op.Not(op.Equal(c, q_block))  # (S, blocks); causal: only the earlier ones
    earlier = op.And(other, op.Or(op.Not(is_causal), op.Less(c, q_block)))
    see_summary = op.And(earlier, op.Unsqueeze(valid, one))  # (Bm, S, blocks)
    kpos = op.Range(op.Squeeze(raw_first, zero), total_i, one_i)  # (R,)
    in_order = op.Or(op.Not(is_causal), op.LessOrEqual(kpos, qpos))
    own = op.And(op.Equal(op.Div(kpos, size), q_block), in_order)  # (S, R)
    raw_real = op.Unsqueeze(op.Slice(real, raw_first, total, one), one)  # (Bm, 1, R)
    see = op.Unsqueeze(op.Concat(see_summary, op.And(own, raw_real), axis=2), op.Constant(value_ints=[1, 2]))
    neg_inf = op.CastLike(op.Constant(value_float=float("-inf")), scores)
    probs = op.Softmax(op.Where(see, scores, neg_inf), axis=-1)
    probs = op.Where(see, probs, op.CastLike(op.Constant(value_float=0.0), probs))  # no visible key -> 0
    out = op.Transpose(op.MatMul(probs, values), perm=[0, 3, 1, 2, 4])  # (B, S, Hkv, group, Dv)
    return op.Reshape(out, op.Concat(zero, zero, minus1, axis=0))


@onnxscript.script(_fa, default_opset=op)
def _every_slot(present_key):
    """(1, L) int64 ones: the key mask of a call without one (a whole cache)."""
    return op.Expand(op.Constant(value_ints=[1]), op.Concat(op.Constant(value_ints=[1]),
                                                            op.Shape(present_key, start=2, end=3), axis=0))


@onnxscript.script(_fa, default_opset=op)
def Attention_hierarchical(
    query, key, value, num_heads: int, kv_num_heads: int, causal: int = 0, block: int = 0, scale: float = 0.0,
):  # fmt: skip
    present_key = _split_heads(key, heads=kv_num_heads)
    present_value = _split_heads(value, heads=kv_num_heads)
    output = HierarchicalCore(query, present_key, present_value, _every_slot(present_key), num_heads=num_heads,
                              kv_num_heads=kv_num_heads, causal=causal, block=block, scale=scale)  # fmt: skip
    return output, present_key, present_value


@onnxscript.script(_fa, default_opset=op)
def Attention_hierarchical_mask(
    query, key, value, past_key, past_value, key_mask, num_heads: int, kv_num_heads: int,
    causal: int = 0, block: int = 0, scale: float = 0.0,
):  # fmt: skip
    present_key = _split_heads(key, heads=kv_num_heads)
    present_value = _split_heads(value, heads=kv_num_heads)
    output = HierarchicalCore(query, present_key, present_value, key_mask, num_heads=num_heads,
                              kv_num_heads=kv_num_heads, causal=causal, block=block, scale=scale)  # fmt: skip
    return output, present_key, present_value


@onnxscript.script(_fa, default_opset=op)
def Attention_hierarchical_past(
    query, key, value, past_key, past_value, num_heads: int, kv_num_heads: int,
    causal: int = 0, block: int = 0, scale: float = 0.0,
):  # fmt: skip
    present_key = op.Concat(past_key, _split_heads(key, heads=kv_num_heads), axis=2)
    present_value = op.Concat(past_value, _split_heads(value, heads=kv_num_heads), axis=2)
    output = HierarchicalCore(query, present_key, present_value, _every_slot(present_key), num_heads=num_heads,
                              kv_num_heads=kv_num_heads, causal=causal, block=block, scale=scale)  # fmt: skip
    return output, present_key, present_value


@onnxscript.script(_fa, default_opset=op)
def Attention_hierarchical_past_mask(
    query, key, value, past_key, past_value, key_mask, num_heads: int, kv_num_heads: int,
    causal: int = 0, block: int = 0, scale: float = 0.0,
):  # fmt: skip
    present_key = op.Concat(past_key, _split_heads(key, heads=kv_num_heads), axis=2)
    present_value = op.Concat(past_value, _split_heads(value, heads=kv_num_heads), axis=2)
    output = HierarchicalCore(query, present_key, present_value, key_mask, num_heads=num_heads,
                              kv_num_heads=kv_num_heads, causal=causal, block=block, scale=scale)  # fmt: skip
    return output, present_key, present_value


PREFIX = "hierarchical"
OVERLOADS = {
    PREFIX: Attention_hierarchical,
    f"{PREFIX}_mask": Attention_hierarchical_mask,
    f"{PREFIX}_past": Attention_hierarchical_past,
    f"{PREFIX}_past_mask": Attention_hierarchical_past_mask,
}
HELPERS = (HierarchicalCore, _every_slot)

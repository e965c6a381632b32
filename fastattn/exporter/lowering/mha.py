"""Lower ``fastattn::Attention`` to ORT's ``com.microsoft.MultiHeadAttention``.

MultiHeadAttention (MHA) covers bidirectional encoders, cross-attention and causal
decoders with a BNSH cache. The mapping, each part verified against the function body on
ORT 1.32 (CPU):

* ``key_mask`` becomes ``key_padding_mask``, int32 (B, P+T) of 0/1 (the kernel accepts
  only int32; (B,) lengths would express right padding alone). Masked scores get
  ``mask_filter_value``, set to -1e30 rather than the default -1e4 so that no masked key
  keeps any weight whatever the logits. A query with no visible key comes out as the mean
  of the values, finite; the op's contract says zeros (the harness compares visible rows).
* ``causal`` without a window is ``unidirectional = 1``, which MHA aligns bottom-right
  over the cache only when the new keys are as many as the queries; when that is not
  provable from the shapes, the :meth:`~MultiHeadAttention.guard` checks it at run time.
* ``window`` and ``global_tokens`` become an additive ``attention_bias`` (1, 1, S, P+T) of
  0 / -1e30 built from slot positions (:func:`visibility_bias`), causality included.
* past_key/past_value (BNSH) go in as they are; MHA returns presents equal to
  ``past ++ new``. An empty past (P = 0) works.
* MHA needs as many key/value heads as query heads: grouped heads (GQA/MQA) are expanded
  (``repeat_interleave`` order) for the kernel, and the Hkv-headed presents are built
  beside it by concatenation.
"""

from __future__ import annotations

import onnx_ir as ir

from fastattn.exporter.lowering.base import MS, OK, AttentionSite, Builder, LoweringRule, MatchResult
from fastattn.exporter.lowering.graph_ops import import_contrib_domain, length, same_dim

MASKED = -1e30  # additive score of a hidden key: exp underflows to exactly 0, and stays finite


class MultiHeadAttention(LoweringRule):
    name = "mha"
    contrib = True

    def check(self, site: AttentionSite) -> MatchResult:
        """Every kind but hierarchical maps onto MHA exactly (see the module docstring)."""
        if site.spec.block:
            return MatchResult.fail("hierarchical attention: MultiHeadAttention has no block summaries")
        return OK

    def rewrite(self, site: AttentionSite, b: Builder) -> tuple[ir.Value, ir.Value | None, ir.Value | None]:
        import_contrib_domain(site)
        spec = site.spec
        group = spec.num_heads // spec.kv_num_heads
        key, value, past_key, past_value = site.key, site.value, site.past_key, site.past_value
        if group > 1:  # MHA has one key/value head per query head
            key = _expand_packed(b, key, spec.kv_num_heads, group)
            value = _expand_packed(b, value, spec.kv_num_heads, group)
            if past_key is not None:
                past_key = _expand_heads(b, past_key, spec.kv_num_heads, group)
                past_value = _expand_heads(b, past_value, spec.kv_num_heads, group)
        padding = None
        if site.key_mask is not None:
            padding = b.Cast(b.Cast(site.key_mask, to=ir.DataType.BOOL), to=ir.DataType.INT32)
        bias = visibility_bias(b, site) if spec.window else None
        output, present_key, present_value = b.MultiHeadAttention(
            site.query, key, value, None, padding, bias, past_key, past_value,
            _domain=MS, _outputs=3, num_heads=spec.num_heads, scale=spec.scale or None,
            unidirectional=1 if spec.causal and not spec.window else None,
            mask_filter_value=MASKED if padding is not None else None,
        )  # fmt: skip
        if group > 1:  # MHA's presents are expanded: build the Hkv-headed ones
            present_key, present_value = None, None
            if site.presents_used:
                present_key = _present(b, site.past_key, site.key, spec.kv_num_heads)
                present_value = _present(b, site.past_value, site.value, spec.kv_num_heads)
        return output, present_key, present_value

    def guard(self, site: AttentionSite, b: Builder) -> ir.Value | None:
        """``unidirectional`` is bottom-right aligned only when T == S; true when it is, or unused."""
        if not site.spec.causal or site.spec.window or same_dim(site.query, site.key, 1):
            return None
        return b.Squeeze(b.Equal(length(b, site.key, 1), length(b, site.query, 1)), b.ints(0))


def visibility_bias(b: Builder, site: AttentionSite) -> ir.Value:
    """Additive scores (1, 1, S, L) for a site with a window: 0 where a query may see a key under its
    causal/window/global rules, :data:`MASKED` elsewhere. Positions as in the op: keys 0..L-1 over
    the cache, queries the last S."""
    spec = site.spec
    total = length(b, site.key, 1)
    if site.past_key is not None:
        total = b.Add(total, length(b, site.past_key, 2))
    total = b.Squeeze(total, b.ints(0))
    first = b.Sub(total, b.Squeeze(length(b, site.query, 1), b.ints(0)))
    one, zero = b.const(1, "int64"), b.const(0, "int64")
    keys = b.Range(zero, total, one)  # (L,)
    queries = b.Unsqueeze(b.Range(first, total, one), b.ints(1))  # (S, 1)
    distance = b.Sub(queries, keys)  # (S, L)
    ok = b.Less(b.Abs(distance), b.const(spec.window, "int64"))
    if spec.global_tokens:
        g = b.const(spec.global_tokens, "int64")
        ok = b.Or(ok, b.Or(b.Less(keys, g), b.Less(queries, g)))
    if spec.causal:
        ok = b.And(ok, b.GreaterOrEqual(distance, zero))
    ok = b.Unsqueeze(ok, b.ints(0, 1))
    return b.Where(ok, b.CastLike(b.const(0.0, "float32"), site.query),
                   b.CastLike(b.const(MASKED, "float32"), site.query))  # fmt: skip


def _expand_packed(b: Builder, x: ir.Value, heads: int, group: int) -> ir.Value:
    """(B, T, Hkv·D) -> (B, T, Hkv·group·D), each head repeated ``group`` times in place."""
    split = b.Unsqueeze(b.Reshape(x, b.ints(0, 0, heads, -1)), b.ints(3))  # (B, T, Hkv, 1, D)
    target = b.Concat(b.Shape(x, start=0, end=2), b.ints(heads, group), b.Shape(split, start=4), axis=0)
    return b.Reshape(b.Expand(split, target), b.ints(0, 0, -1))


def _expand_heads(b: Builder, x: ir.Value, heads: int, group: int) -> ir.Value:
    """(B, Hkv, P, D) -> (B, Hkv·group, P, D) in ``repeat_interleave`` order (P may be 0)."""
    split = b.Unsqueeze(x, b.ints(2))  # (B, Hkv, 1, P, D)
    target = b.Concat(b.Shape(x, start=0, end=2), b.ints(group), b.Shape(x, start=2), axis=0)
    merged = b.Concat(b.Shape(x, start=0, end=1), b.ints(heads * group), b.Shape(x, start=2), axis=0)
    return b.Reshape(b.Expand(split, target), merged, allowzero=1)


def _present(b: Builder, past: ir.Value | None, new: ir.Value, heads: int) -> ir.Value:
    """``past ++ new`` in (B, Hkv, L, D), as the op's presents."""
    split = b.Transpose(b.Reshape(new, b.ints(0, 0, heads, -1)), perm=[0, 2, 1, 3])
    return split if past is None else b.Concat(past, split, axis=2)


MHA = MultiHeadAttention()

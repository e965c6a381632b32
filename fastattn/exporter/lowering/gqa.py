"""Lower causal ``fastattn::Attention`` to ORT's ``com.microsoft.GroupQueryAttention``.

GroupQueryAttention (GQA) takes packed (B, S, H·D) query/key/value, a BNSH cache and
per-row valid lengths, and groups heads natively (``h // (Hq / Hkv)``): the cache stays
Hkv-headed. The mapping, each part verified against the function body on ORT 1.32 (CPU):

* ``window = W`` is ``local_window_size = W``: W keys including the query's own, tested
  with sequences and caches longer than the window, W = 1 included. (Older ORT CPU kernels
  softmaxed over W + 1 keys: the convention is bound to the ORT version.)
* ``seqlens_k`` is ``P + T - 1`` per row and ``total_sequence_length`` is ``P + T`` (the
  key mask's width when there is a mask): every cache slot is a token. An empty past
  (P = 0) is a first prompt and works. With the total from the mask, the same node also
  runs on one max-length buffer bound as both past and present (ORT's shared buffer).
* padding: GQA knows only a per-row valid length. Right-padded rows of a prefill (no
  cached tokens) are exact with ``seqlens_k`` = valid count - 1, padded queries included.
  After cached tokens GQA writes the new key at the row's valid length instead of slot P
  (the op's ``present = past ++ new``), so padded decode steps are not exact; the
  :meth:`~GroupQueryAttention.guard` sends them, and left padding, to the portable body.
* GQA needs as many new keys as queries, and a multi-token step after cached tokens only
  with batch 1: the guard checks both at run time (the first only when shapes leave it open).

Refused by :meth:`~GroupQueryAttention.check`: bidirectional attention (ORT 1.32's GQA has a
``causal`` attribute, but older runtimes reject it; mha covers it), global tokens (keys
outside ``local_window_size`` that must stay visible; mha expresses them as a bias), a head
size that is not static or not a multiple of 8 (the CPU kernel's rule), and a value head
size that differs from the key's.
"""

from __future__ import annotations

import onnx_ir as ir

from fastattn.exporter.lowering.base import MS, OK, AttentionSite, Builder, LoweringRule, MatchResult
from fastattn.exporter.lowering.graph_ops import import_contrib_domain, length, same_dim

INT32 = ir.DataType.INT32


class GroupQueryAttention(LoweringRule):
    name = "gqa"
    contrib = True

    def check(self, site: AttentionSite) -> MatchResult:
        spec, d = site.spec, site.head_size
        if spec.block:
            return MatchResult.fail("hierarchical attention: GroupQueryAttention has no block summaries")
        if not spec.causal:
            return MatchResult.fail("GroupQueryAttention is lowered for causal attention only (bidirectional: mha)")
        if spec.global_tokens:
            return MatchResult.fail(f"global tokens ({spec.global_tokens}) lie outside local_window_size (mha: bias)")
        if d is None:
            return MatchResult.fail("head size is not static (the key's last dimension is symbolic)")
        if d % 8:
            return MatchResult.fail(f"head size {d} is not a multiple of 8 (GroupQueryAttention's CPU kernel)")
        if site.value_head_size != d:
            return MatchResult.fail(f"value head size {site.value_head_size} differs from the key head size {d}")
        return OK

    def rewrite(self, site: AttentionSite, b: Builder) -> tuple[ir.Value, ir.Value, ir.Value]:
        import_contrib_domain(site)
        spec = site.spec
        # (1,) int64: P + T, the mask's width when there is one (equal under the op's contract,
        # and still right when the past is a longer buffer shared with the present)
        if site.key_mask is not None:
            total = length(b, site.key_mask, 1)
        else:
            total = length(b, site.key, 1)
            if site.past_key is not None:
                total = b.Add(total, length(b, site.past_key, 2))
        if site.key_mask is None:  # every row holds P + T tokens
            seqlens = b.Cast(b.Expand(b.Sub(total, b.ints(1)), length(b, site.query, 0)), to=INT32)
        else:  # the guard admits only right-padded rows: the count of valid keys is the length
            seqlens = b.Sub(b.ReduceSum(_valid(b, site.key_mask), b.ints(1), keepdims=0), b.const(1, "int32"))
        output, present_key, present_value = b.GroupQueryAttention(
            site.query, site.key, site.value, site.past_key, site.past_value, seqlens,
            b.Cast(b.Squeeze(total, b.ints(0)), to=INT32),
            _domain=MS, _outputs=3, num_heads=spec.num_heads, kv_num_heads=spec.kv_num_heads,
            local_window_size=spec.window or None, scale=spec.scale or None,
        )  # fmt: skip
        return output, present_key, present_value

    def guard(self, site: AttentionSite, b: Builder) -> ir.Value | None:
        """True when GQA is exact for the inputs at hand (see the module docstring); None when always."""
        no_past = None
        if site.past_key is not None:
            no_past = b.Squeeze(b.Equal(length(b, site.past_key, 2), b.ints(0)), b.ints(0))
        conditions = []
        if site.key_mask is not None:
            conditions.append(_padding_ok(b, site.key_mask, no_past))
        if not same_dim(site.query, site.key, 1):
            conditions.append(_scalar(b, b.Equal(length(b, site.key, 1), length(b, site.query, 1))))
        if no_past is not None:  # several new tokens after a cache: batch 1 only
            one = b.ints(1)
            single = b.Or(b.Equal(length(b, site.query, 1), one), b.Equal(length(b, site.query, 0), one))
            conditions.append(b.Or(_scalar(b, single), no_past))
        if not conditions:
            return None
        guard = conditions[0]
        for condition in conditions[1:]:
            guard = b.And(guard, condition)
        return guard


def _padding_ok(b: Builder, key_mask: ir.Value, no_past: ir.Value | None) -> ir.Value:
    """Every row right-padded with at least one valid key, and, when the site has a cache, either no
    padding at all or no cached tokens yet."""
    valid = _valid(b, key_mask)  # (B, L)
    one, zero = b.ints(1), b.ints(0)
    rises = b.Greater(b.Slice(valid, one, b.ints(2**62), one), b.Slice(valid, zero, b.ints(-1), one))
    right_padded = b.Equal(b.ReduceSum(b.Cast(rises, to=INT32), keepdims=0), b.const(0, "int32"))
    fewest = b.ReduceMin(b.ReduceSum(valid, one, keepdims=0), keepdims=0)  # valid keys of the emptiest row
    ok = b.And(right_padded, b.GreaterOrEqual(fewest, b.const(1, "int32")))
    if no_past is None:
        return ok
    unpadded = b.Equal(fewest, b.Cast(_scalar(b, length(b, key_mask, 1)), to=INT32))
    return b.And(ok, b.Or(unpadded, no_past))


def _valid(b: Builder, key_mask: ir.Value) -> ir.Value:
    """(B, L) int32, 1 where a key may be attended (the mask may be int64, int32 or bool)."""
    return b.Cast(b.Cast(key_mask, to=ir.DataType.BOOL), to=INT32)


def _scalar(b: Builder, value: ir.Value) -> ir.Value:
    return b.Squeeze(value, b.ints(0))


GQA = GroupQueryAttention()

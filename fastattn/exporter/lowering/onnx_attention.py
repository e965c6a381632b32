"""ONNX ``Attention`` (opset 23): every kind of ``fastattn::Attention``, with an explicit mask.

Mapping (each point checked on ONNX Runtime 1.32's CPU kernel, see the tests):

* 4-D query (B, Hq, S, D) against the present keys (B, Hkv, L, D): the node's presents,
  ``Concat(past, new keys split into heads)``, are built here and fed to the kernel with
  no past input. Query head h reads key/value head ``h // (Hq / Hkv)`` as in the op.
  Handing the past to the kernel (3-D packed inputs, its own presents) gives the same
  numbers but decodes slower: S=1 after 2048 keys, Hq=8, Hkv=2, D=64, 2 threads:
  0.18 ms vs 0.11 ms this way (the portable body: 0.14 ms); prefill S=4096 is equal;
* ONNX ``Attention`` has no window, no global tokens and no key-padding input that fits
  (``nonpad_kv_seqlen`` of opset 24, which ORT 1.32 also runs, excludes a past cache and
  describes right padding only: opset 23 it is), so those become one boolean
  ``attn_mask`` built from positions: keys 0..L-1, queries L-S..L-1. It is (S, L) without
  a key mask and (B, 1, S, L) with one; a (B, 1, 1, L) padding mask is refused at run
  time ("inconsistent q_sequence_length");
* ``is_causal`` is bottom-right (``j <= i + P``) only after a past input; with none it is
  top-left, which is the op's convention only when the queries are all the keys: plain
  causal attention without a cache whose query and key share their sequence dim
  (self-attention) uses it; otherwise causality goes into the mask (about 4% slower at
  S=4096, the same at decode);
* a query row whose mask is all false comes out as zeros (ONNX 1.23 errata; ORT 1.32 does
  so for boolean and additive masks), which is the op's contract;
* ``scale`` 0 leaves the op's default 1/sqrt(D).

The mask costs O(S·L) memory and the kernel O(S·L) work: a window saves nothing here
(see :mod:`.blocked_local`, which shares the position helpers below).
"""

from __future__ import annotations

import onnx_ir as ir

from fastattn.exporter.lowering.base import OK, AttentionSite, Builder, LoweringRule, MatchResult
from fastattn.exporter.lowering.graph_ops import (
    arange,
    is_self_attention,
    key_mask_bool,
    lengths,
    presents,
    split_heads,
    visible,
)


class OnnxAttention(LoweringRule):
    """ONNX ``Attention``-23 with a boolean mask from positions; exact for every kind of node."""

    name = "onnx-attention"
    contrib = False
    min_opset = 23

    def check(self, site: AttentionSite) -> MatchResult:
        if site.spec.block:
            return MatchResult.fail("hierarchical attention: block summaries are keys ONNX Attention is not given")
        return OK  # the explicit mask expresses every other pattern of the op

    def rewrite(self, site: AttentionSite, b: Builder) -> tuple[ir.Value, ir.Value | None, ir.Value | None]:
        spec = site.spec
        # is_causal is top-left without a past input: exact only when the queries are all the keys
        is_causal = (spec.causal and not spec.window and site.key_mask is None and site.past_key is None
                     and is_self_attention(site))  # fmt: skip
        mask = None
        if not is_causal and (spec.causal or spec.window or site.key_mask is not None):
            mask = self._mask(site, b)
        key, value = presents(site, b)  # (B, Hkv, L, D): the op's presents are the kernel's keys
        output = b.Attention(
            split_heads(b, site.query, spec.num_heads), key, value, mask,
            is_causal=1 if is_causal else None, scale=spec.scale or None,
        )  # fmt: skip
        output = b.Reshape(b.Transpose(output, perm=[0, 2, 1, 3]), b.ints(0, 0, -1))  # (B, S, Hq*Dv)
        return (output, key, value) if site.presents_used else (output, None, None)

    @staticmethod
    def _mask(site: AttentionSite, b: Builder) -> ir.Value:
        """(S, L) boolean, or (B, 1, S, L) with a key mask: true where a query sees a key."""
        n = lengths(site, b)
        kpos = arange(b, b.ints(0), n.total)  # (L,)
        qpos = b.Unsqueeze(arange(b, n.first, n.total), b.ints(1))  # (S, 1)
        ok = visible(site, b, qpos, kpos)
        keys = key_mask_bool(site, b)
        if keys is None:
            return ok
        keys = b.Unsqueeze(keys, b.ints(1, 2))  # (B, 1, 1, L)
        if ok is None:  # padding only: the mask still needs its query axis
            return b.Expand(keys, b.Concat(b.ints(1, 1), n.seq, b.ints(1), axis=0))
        return b.And(ok, keys)


ONNX_ATTENTION = OnnxAttention()

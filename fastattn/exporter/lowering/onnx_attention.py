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

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from fastattn.exporter.lowering.base import OK, AttentionSite, Builder, LoweringRule, MatchResult

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


class OnnxAttention(LoweringRule):
    """ONNX ``Attention``-23 with a boolean mask from positions; exact for every kind of node."""

    name = "onnx-attention"
    contrib = False
    min_opset = 23

    def check(self, site: AttentionSite) -> MatchResult:
        return OK  # the explicit mask expresses every pattern of the op

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

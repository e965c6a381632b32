"""PyTorch reference kernels for the fastattn attention contract (see :mod:`.spec`).

These are what exported models are validated and benchmarked against, so they must be
both exact and efficient:

* full / causal attention goes through ``scaled_dot_product_attention``;
* a sliding window is computed in query blocks of W against their own band of keys
  (W + W-1 keys causal, W + 2(W-1) bidirectional), so cost grows as O(S·W), never O(S²);
* global tokens add G key columns to every block and G dense query rows;
* decoding with a window reads only the keys the window can reach;
* hierarchical attention (``block``) is :mod:`.hierarchical`: own block + block summaries.

Shapes: q (B, Hq, S, D); k (B, Hkv, L, D); v (B, Hkv, L, Dv); key_mask (B, L) bool
(True = attend) or None. Queries sit at positions L-S..L-1.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from fastattn.attention.hierarchical import attend_hierarchical
from fastattn.attention.spec import AttentionSpec


def attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, spec: AttentionSpec, key_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Attention of q over k/v under ``spec``; returns (B, Hq, S, Dv)."""
    if spec.block:  # its key mask spans every position, also those a compact cache summarizes
        return attend_hierarchical(q, k, v, spec, key_mask)
    S, L = q.shape[2], k.shape[2]
    scale = spec.head_scale(q.shape[-1])
    W, G = spec.window, spec.global_tokens
    if W and L > 2 * W + G:  # the window excludes keys: do not pay for them
        if S > W:
            return _blocked(q, k, v, spec, key_mask, scale)
        return _reachable(q, k, v, spec, key_mask, scale)
    return _dense(q, k, v, spec, key_mask, scale, torch.arange(L - S, L), torch.arange(L))


def allowed(qpos: torch.Tensor, kpos: torch.Tensor, spec: AttentionSpec) -> torch.Tensor:
    """Boolean visibility of key position ``kpos`` from query position ``qpos`` (broadcasting)."""
    dist = qpos - kpos
    ok = dist >= 0 if spec.causal else torch.ones_like(dist, dtype=torch.bool)
    if spec.window:
        near = dist.abs() < spec.window
        if spec.global_tokens:
            near = near | (kpos < spec.global_tokens) | (qpos < spec.global_tokens)
        ok = ok & near
    return ok


def _dense(q, k, v, spec, key_mask, scale, qpos, kpos):
    """SDPA over the keys at positions ``kpos`` with an explicit mask; fully masked rows give 0."""
    plain = not spec.window and key_mask is None and (not spec.causal or q.shape[2] == k.shape[2])
    if plain:
        return F.scaled_dot_product_attention(
            q, k, v, is_causal=spec.causal and q.shape[2] > 1, scale=scale, enable_gqa=spec.group_size > 1
        )
    mask = allowed(qpos[:, None], kpos[None, :], spec)[None, None]  # (1, 1, S, Lk)
    if key_mask is not None:
        mask = mask & key_mask[:, None, None, :]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=spec.group_size > 1)
    return out.masked_fill(~mask.any(-1, keepdim=True), 0.0)


def _reachable(q, k, v, spec, key_mask, scale):
    """Few queries (decoding): attend densely over only the keys the window can reach."""
    S, L, W, G = q.shape[2], k.shape[2], spec.window, spec.global_tokens
    first = L - S
    lo = max(first - (W - 1), 0)
    kpos = torch.arange(lo, L)
    if G and lo > 0:
        kpos = torch.cat([torch.arange(min(G, lo)), kpos])
    km = None if key_mask is None else key_mask[:, kpos]
    return _dense(q, k[:, :, kpos], v[:, :, kpos], spec, km, scale, torch.arange(first, L), kpos)


def _blocked(q, k, v, spec, key_mask, scale):
    """Sliding window in blocks of W queries, each against its band of keys: O(S·W).

    Blocks are folded into the batch so one SDPA call does all of them.
    """
    B, Hq, S, D = q.shape
    Hkv, L = k.shape[1], k.shape[2]
    W, G = spec.window, spec.global_tokens
    left, right = W - 1, (0 if spec.causal else W - 1)
    nb = math.ceil(S / W)
    band = W + left + right
    first = L - S
    span = (nb - 1) * W + band  # padded key positions covered by all bands

    def bands(x: torch.Tensor, dim: int) -> torch.Tensor:
        """Pad so padded index = position + left, then cut one band per block along ``dim``."""
        pad = [0, 0] * (x.dim() - 1 - dim) + [left, max(first + span - left - L, 0)]
        return F.pad(x, pad).narrow(dim, first, span).unfold(dim, band, W)

    def fold(x: torch.Tensor) -> torch.Tensor:
        """(B, H, nb, n, D) -> (B*nb, H, n, D)."""
        return x.transpose(1, 2).reshape(B * nb, x.shape[1], x.shape[3], x.shape[4])

    qb = fold(F.pad(q, (0, 0, 0, nb * W - S)).view(B, Hq, nb, W, D))
    kb = fold(bands(k, 2).transpose(-1, -2))
    vb = fold(bands(v, 2).transpose(-1, -2))
    blocks = torch.arange(nb)[:, None]
    qpos = first + blocks * W + torch.arange(W)  # (nb, W)
    kpos = first + blocks * W - left + torch.arange(band)  # (nb, band)
    local = spec if not G else AttentionSpec(spec.num_heads, spec.kv_num_heads, spec.causal, W)
    mask = allowed(qpos[:, :, None], kpos[:, None, :], local) & ((kpos >= G) & (kpos < L))[:, None, :]
    mask = mask.expand(B, nb, W, band)
    if key_mask is not None:
        mask = mask & bands(key_mask, 1)[:, :, None, :]
    if G:  # every query also sees the global keys 0..G-1
        gmask = torch.ones(nb, W, G, dtype=torch.bool) if not spec.causal else torch.arange(G) <= qpos[:, :, None]
        gmask = gmask.expand(B, nb, W, G)
        if key_mask is not None:
            gmask = gmask & key_mask[:, None, None, :G]
        mask = torch.cat([gmask, mask], -1)
        def glob(x: torch.Tensor) -> torch.Tensor:  # the G global keys (values) beside every block
            return x[:, None, :, :G].expand(B, nb, Hkv, G, x.shape[-1]).reshape(B * nb, Hkv, G, x.shape[-1])

        kb, vb = torch.cat([glob(k), kb], 2), torch.cat([glob(v), vb], 2)
    mask = mask.reshape(B * nb, 1, W, mask.shape[-1])
    out = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=mask, scale=scale, enable_gqa=spec.group_size > 1)
    out = out.masked_fill(~mask.any(-1, keepdim=True), 0.0)
    out = out.view(B, nb, Hq, W, -1).transpose(1, 2).reshape(B, Hq, nb * W, -1)[:, :, :S]
    n_global_rows = min(max(G - first, 0), S)
    if n_global_rows:  # global queries see every key: dense rows
        rows = slice(0, n_global_rows)
        out[:, :, rows] = _dense(
            q[:, :, rows], k, v, spec, key_mask, scale, torch.arange(first, first + n_global_rows), torch.arange(L)
        )
    return out

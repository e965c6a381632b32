"""Hierarchical attention in PyTorch: O(S·(B + S/B)) work, never a masked S x S.

The sequence is cut into blocks of B positions. A query sees the keys of its own block
(causally in decoders) and one summary per earlier block (per other block when
bidirectional): the mean of that block's real keys and the mean of its real values. A
block without a real key has no summary. See :mod:`fastattn.attention.spec` for the
contract, including the compact cache whose first n slots are the summaries of blocks
0..n-1 (:meth:`~fastattn.attention.spec.AttentionSpec.summaries`).

How it is computed, blocks folded into the batch:

* the raw keys (positions nB..N-1, block-aligned) are padded to whole blocks and viewed as
  (…, blocks, B, D); their summaries are masked means over the block axis; the cached
  summaries go in front: ``ns`` summaries in all;
* only the blocks holding queries are computed: each block's B queries score against its
  own B keys (one batched matmul) and against the ``ns`` summaries (one matmul over every
  query), and both parts share one softmax;
* grouped heads stay grouped: queries are viewed as (…, Hkv, group, …) against the Hkv keys.

Scores are (S, B + ns) per head: O(S·(B + S/B)), which is O(S^1.5) when B is near √S.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fastattn.attention.spec import AttentionSpec


def attend_hierarchical(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, spec: AttentionSpec, key_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """q (Bt, Hq, S, D) over k/v (Bt, Hkv, L, D) cache slots; key_mask (Bt, N) bool over every position
    (N = L for a whole cache; a compact cache holds summaries in its first slots). Returns (Bt, Hq, S, Dv)."""
    Bt, Hq, S, D = q.shape
    Hkv, L, Dv = k.shape[1], k.shape[2], v.shape[-1]
    B, group = spec.block, spec.group_size
    N = L if key_mask is None else key_mask.shape[1]
    n = spec.summaries(N, L)  # leading slots that are summaries of blocks 0..n-1
    real = torch.ones(Bt, N, dtype=torch.bool, device=q.device) if key_mask is None else key_mask.expand(Bt, N)
    R = L - n  # raw keys: positions nB..N-1
    blocks = -(-R // B)
    pad = blocks * B - R

    raw_mask = F.pad(real[:, n * B :], (0, pad)).view(Bt, blocks, B)
    kb = F.pad(k[:, :, n:], (0, 0, 0, pad)).view(Bt, Hkv, blocks, B, D)
    vb = F.pad(v[:, :, n:], (0, 0, 0, pad)).view(Bt, Hkv, blocks, B, Dv)
    count = raw_mask.sum(-1)  # (Bt, blocks)
    weights = raw_mask.to(k.dtype)[:, None, :, :, None]
    denom = count.clamp(min=1).to(k.dtype)[:, None, :, None]
    sum_k = torch.cat([k[:, :, :n], (kb * weights).sum(3) / denom], 2)  # (Bt, Hkv, ns, D)
    sum_v = torch.cat([v[:, :, :n], (vb * weights).sum(3) / denom], 2)
    valid = torch.cat([real[:, : n * B].reshape(Bt, n, B).any(-1), count > 0], 1)  # (Bt, ns)
    ns = n + blocks

    first = R - S  # raw index of the first query
    qb0 = first // B  # first raw block holding a query
    nq = blocks - qb0
    front = first - qb0 * B
    qg = q.reshape(Bt, Hkv, group, S, D) * spec.head_scale(D)
    qg = F.pad(qg, (0, 0, front, nq * B - S - front))  # (Bt, Hkv, g, nq*B, D)
    local = qg.view(Bt, Hkv, group, nq, B, D) @ kb[:, :, None, qb0:].transpose(-1, -2)  # (.., nq, B, B)
    summary = (qg @ sum_k[:, :, None].transpose(-1, -2)).view(Bt, Hkv, group, nq, B, ns)

    q_block = n + qb0 + torch.arange(nq, device=q.device)  # (nq,) block index of each query block
    c = torch.arange(ns, device=q.device)
    earlier = c[None] < q_block[:, None] if spec.causal else c[None] != q_block[:, None]  # (nq, ns)
    see_summary = (earlier[None] & valid[:, None, :])[:, :, None, :].expand(Bt, nq, B, ns)
    see_local = raw_mask[:, qb0:, None, :]  # (Bt, nq, 1, B)
    if spec.causal:
        see_local = see_local & torch.ones(B, B, dtype=torch.bool, device=q.device).tril()
    see = torch.cat([see_summary, see_local.expand(Bt, nq, B, B)], -1)[:, None, None]  # (Bt,1,1,nq,B,ns+B)

    scores = torch.cat([summary, local], -1)
    # a finite floor, not -inf: rows that see nothing stay NaN-free (also in the backward pass)
    probs = torch.softmax(scores.masked_fill(~see, torch.finfo(scores.dtype).min), -1).masked_fill(~see, 0.0)
    p_summary = probs[..., :ns].reshape(Bt, Hkv, group, nq * B, ns)
    out = (p_summary @ sum_v[:, :, None]).view(Bt, Hkv, group, nq, B, Dv) + probs[..., ns:] @ vb[:, :, None, qb0:]
    return out.reshape(Bt, Hkv, group, nq * B, Dv)[:, :, :, front : front + S].reshape(Bt, Hq, S, Dv)

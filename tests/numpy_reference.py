"""An independent NumPy statement of the fastattn attention contract: dense, masked, slow, obvious."""

from __future__ import annotations

import numpy as np


def allowed(S, L, causal=False, window=0, global_tokens=0):
    """(S, L) bool: which of L keys each of the last S queries may see, padding aside."""
    qp, kp = np.arange(L - S, L)[:, None], np.arange(L)[None]
    ok = np.ones((S, L), bool)
    if causal:
        ok &= kp <= qp
    if window:
        near = np.abs(qp - kp) < window
        if global_tokens:
            near |= (kp < global_tokens) | (qp < global_tokens)
        ok &= near
    return ok


def attention(q, k, v, past_k, past_v, key_mask, num_heads, kv_heads, causal=False, window=0, global_tokens=0, scale=0.0):
    """Packed (B,S,H*D) q/k/v, (B,Hkv,P,D) past or None, (B,P+T) mask or None -> (out, present_k, present_v)."""
    B, S, _ = q.shape
    T = k.shape[1]
    qh = q.reshape(B, S, num_heads, -1).transpose(0, 2, 1, 3).astype(np.float64)
    kh = k.reshape(B, T, kv_heads, -1).transpose(0, 2, 1, 3)
    vh = v.reshape(B, T, kv_heads, -1).transpose(0, 2, 1, 3)
    if past_k is not None:
        kh, vh = np.concatenate([past_k, kh], 2), np.concatenate([past_v, vh], 2)
    L, D = kh.shape[2], kh.shape[3]
    group = num_heads // kv_heads
    kr, vr = np.repeat(kh, group, 1).astype(np.float64), np.repeat(vh, group, 1).astype(np.float64)
    scores = qh @ kr.transpose(0, 1, 3, 2) * (scale or 1 / np.sqrt(D))
    ok = np.broadcast_to(allowed(S, L, causal, window, global_tokens), (B, 1, S, L))
    if key_mask is not None:
        ok = ok & key_mask.astype(bool)[:, None, None, :]
    scores = np.where(ok, scores, -np.inf)
    top = scores.max(-1, keepdims=True)
    e = np.exp(scores - np.where(np.isfinite(top), top, 0)) * ok
    den = e.sum(-1, keepdims=True)
    p = np.where(den > 0, e / np.where(den > 0, den, 1), 0)
    out = (p @ vr).transpose(0, 2, 1, 3).reshape(B, S, -1)
    return out.astype(q.dtype), kh, vh


def visible_rows(batch, seq, past, key_mask, causal=False, window=0, global_tokens=0):
    """(B, S) bool: which queries see at least one key (the others output zeros by contract)."""
    L = past + seq
    ok = np.broadcast_to(allowed(seq, L, causal, window, global_tokens), (batch, seq, L))
    if key_mask is not None:
        ok = ok & key_mask.astype(bool)[:, None, :]
    return ok.any(-1)


def hierarchical(q, k, v, past_k, past_v, key_mask, num_heads, kv_heads, causal, block, scale=0.0):
    """Hierarchical attention, one query at a time from the definition (slow, obvious).

    The past may be compact: its first n slots summarize blocks 0..n-1, n = (N - L)/(block - 1)
    with N the key mask's width (every position) and L the slots. Returns (out, present_k, present_v).
    """
    B, S, _ = q.shape
    T = k.shape[1]
    kh = k.reshape(B, T, kv_heads, -1).transpose(0, 2, 1, 3)
    vh = v.reshape(B, T, kv_heads, -1).transpose(0, 2, 1, 3)
    if past_k is not None:
        kh, vh = np.concatenate([past_k, kh], 2), np.concatenate([past_v, vh], 2)
    L, D = kh.shape[2], kh.shape[3]
    N = L if key_mask is None else key_mask.shape[1]
    real = np.ones((B, N), bool) if key_mask is None else key_mask.astype(bool)
    n = (N - L) // (block - 1)
    assert n * (block - 1) == N - L
    group = num_heads // kv_heads
    s = scale or 1 / np.sqrt(D)
    qh = q.reshape(B, S, num_heads, -1).transpose(0, 2, 1, 3).astype(np.float64)
    out = np.zeros((B, num_heads, S, vh.shape[-1]))
    blocks = -(-N // block)
    for b in range(B):
        for h in range(num_heads):
            kk, vv = kh[b, h // group].astype(np.float64), vh[b, h // group].astype(np.float64)
            for i in range(S):
                p = N - S + i
                own = p // block
                keys, values = [], []
                for c in range(blocks):
                    if c == own or (causal and c > own):
                        continue
                    members = [j for j in range(c * block, min((c + 1) * block, N)) if real[b, j]]
                    if not members:
                        continue
                    if c < n:  # summarized in the cache
                        keys.append(kk[c]), values.append(vv[c])
                    else:
                        slots = [n + j - n * block for j in members]
                        keys.append(kk[slots].mean(0)), values.append(vv[slots].mean(0))
                for j in range(own * block, min((own + 1) * block, N)):
                    if real[b, j] and (not causal or j <= p):
                        keys.append(kk[n + j - n * block]), values.append(vv[n + j - n * block])
                if not keys:
                    continue
                scores = np.array(keys) @ qh[b, h, i] * s
                w = np.exp(scores - scores.max())
                out[b, h, i] = (w / w.sum()) @ np.array(values)
    return out.transpose(0, 2, 1, 3).reshape(B, S, -1).astype(q.dtype), kh, vh


def summarize(present, key_mask, block):
    """A whole cache (B, H, N, D) made compact: complete blocks become their masked means."""
    B, H, N, D = present.shape
    real = np.ones((B, N), bool) if key_mask is None else key_mask.astype(bool)
    m = N // block
    w = real[:, : m * block].reshape(B, 1, m, block, 1).astype(np.float64)
    sums = (present[:, :, : m * block].reshape(B, H, m, block, D) * w).sum(3) / np.maximum(w.sum(3), 1)
    return np.concatenate([sums.astype(present.dtype), present[:, :, m * block :]], 2)

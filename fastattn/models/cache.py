"""What a decoder layer keeps of its KV cache.

A causal layer with a window W (and G global tokens) never reads a key again once it is
older than the window: the next query at position p sees keys p-W+1..p and keys 0..G-1.
So such a layer returns as its present only the G global positions and the last W-1
(``AttentionSpec.cache_limit`` positions in all), and its cache stops growing: memory and
per-step work stay flat however long the generation runs. Unbounded layers keep everything.

The attention mask stays over every position of the sequence (it is where positions come
from, ``cumsum - 1``); a trimmed layer reads the columns of the positions it kept: the
first G and the last ``past + new - G``. With G = 0 that is the mask's tail.
"""

from __future__ import annotations

import torch

from fastattn.attention.spec import AttentionSpec

KV = tuple[torch.Tensor, torch.Tensor]


def keep(present: KV, spec: AttentionSpec, mask: torch.Tensor | None = None) -> KV:
    """The part of a layer's present cache (B, Hkv, L, D) that later steps can read; ``mask`` (B, N)
    is the attention mask over every position (hierarchical layers summarize with it)."""
    if spec.block:
        return summarize(present[0], spec, mask), summarize(present[1], spec, mask)
    limit = spec.cache_limit
    if not limit:
        return present
    return _first_and_last(present[0], spec.global_tokens, limit), _first_and_last(present[1], spec.global_tokens, limit)


def layer_mask(mask: torch.Tensor | None, keys: int, spec: AttentionSpec) -> torch.Tensor | None:
    """The mask columns (B, keys) of a layer whose cache (past + new) holds ``keys`` positions."""
    if mask is None or not spec.cache_limit:  # hierarchical layers read every column
        return mask
    G, T = spec.global_tokens, mask.shape[1]
    if not G:
        return mask[:, T - keys :]
    return torch.cat([mask[:, :G], mask[:, T - keys + G :]], 1)


def _first_and_last(x: torch.Tensor, first: int, limit: int) -> torch.Tensor:
    last = x[:, :, first:][:, :, -(limit - first) :] if limit > first else x[:, :, :0]
    return torch.cat([x[:, :, :first], last], 2) if first else last


def summarize(x: torch.Tensor, spec: AttentionSpec, mask: torch.Tensor | None) -> torch.Tensor:
    """A hierarchical layer's cache (B, H, L, D) with every complete block of its raw part replaced
    by the block's mean over its real positions (a block with none: zeros, never read)."""
    B, H, L, D = x.shape
    size = spec.block
    N = L if mask is None else mask.shape[1]
    n = (N - L) // (size - 1)  # summaries already in front
    done = (L - n) // size  # complete raw blocks
    blocks = x[:, :, n : n + done * size].reshape(B, H, done, size, D)
    if mask is None:
        means = blocks.mean(3)
    else:
        real = mask[:, n * size : (n + done) * size].reshape(B, 1, done, size, 1).to(x.dtype)
        means = (blocks * real).sum(3) / real.sum(3).clamp(min=1.0)
    return torch.cat([x[:, :, :n], means, x[:, :, n + done * size :]], 2)

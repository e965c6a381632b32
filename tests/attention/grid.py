"""Shapes and attention kinds every form of the op is tested at (NumPy is the reference)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Case:
    batch: int
    seq: int
    past: int
    heads: int
    kv_heads: int
    head_size: int
    causal: bool
    window: int = 0
    global_tokens: int = 0
    masked: bool = False

    def __str__(self) -> str:
        kind = "causal" if self.causal else "bidir"
        extra = f"-w{self.window}" + (f"-g{self.global_tokens}" if self.global_tokens else "") if self.window else ""
        return (f"{kind}{extra}-b{self.batch}s{self.seq}p{self.past}-h{self.heads}kv{self.kv_heads}"
                + ("-mask" if self.masked else ""))  # fmt: skip

    def arrays(self, seed: int = 0):
        """q, k, v packed; past (or None); key mask (B, P+S) int64 with some keys masked (or None)."""
        rng = np.random.default_rng(seed)
        f = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
        B, S, P, D = self.batch, self.seq, self.past, self.head_size
        q, k, v = f(B, S, self.heads * D), f(B, S, self.kv_heads * D), f(B, S, self.kv_heads * D)
        past = (f(B, self.kv_heads, P, D), f(B, self.kv_heads, P, D)) if P else None
        mask = None
        if self.masked:
            mask = (rng.random((B, P + S)) > 0.25).astype(np.int64)
            mask[0, :] = 1
            if B > 1:
                mask[1, : (P + S) // 2] = 0  # left padding: leading queries see no key
        return q, k, v, past, mask


CASES = [
    # full / causal, MHA, GQA, MQA, with and without padding
    Case(2, 7, 0, 4, 4, 8, causal=False),
    Case(2, 7, 0, 4, 2, 8, causal=False, masked=True),
    Case(2, 9, 0, 4, 1, 8, causal=True),
    Case(3, 12, 0, 8, 2, 16, causal=True, masked=True),
    # sliding window: sequence longer than the window (blocked kernel) and shorter than it
    Case(2, 40, 0, 4, 2, 8, causal=True, window=5, masked=True),
    Case(1, 40, 0, 4, 1, 8, causal=False, window=5),
    Case(2, 6, 0, 4, 2, 8, causal=True, window=16, masked=True),
    Case(3, 100, 0, 8, 2, 16, causal=True, window=7, masked=True),
    Case(1, 50, 0, 2, 2, 4, causal=True, window=1),
    # global + local
    Case(2, 41, 0, 4, 4, 8, causal=False, window=6, global_tokens=3, masked=True),
    Case(2, 41, 0, 4, 2, 8, causal=True, window=6, global_tokens=3, masked=True),
    Case(1, 60, 0, 2, 1, 4, causal=False, window=4, global_tokens=10),
    # with a cache: decode steps and chunks, past longer than the window
    Case(2, 1, 30, 4, 2, 8, causal=True, masked=True),
    Case(2, 1, 30, 4, 2, 8, causal=True, window=5, masked=True),
    Case(2, 3, 30, 4, 2, 8, causal=True, window=5, global_tokens=2, masked=True),
    Case(2, 12, 30, 4, 1, 8, causal=True, window=5, global_tokens=2, masked=True),
    Case(2, 12, 3, 4, 2, 8, causal=True, window=5, global_tokens=8),
]

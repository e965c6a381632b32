"""Shapes hierarchical attention is tested at (every form of the op), with NumPy as the reference."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tests import numpy_reference


@dataclass(frozen=True)
class HCase:
    batch: int
    seq: int
    past: int
    heads: int
    kv_heads: int
    head_size: int
    causal: bool
    block: int
    masked: bool = False
    compact: bool = False  # the past holds the summaries of its complete blocks

    def __str__(self) -> str:
        return (f"{'causal' if self.causal else 'bidir'}-B{self.block}-b{self.batch}s{self.seq}p{self.past}"
                f"-h{self.heads}kv{self.kv_heads}" + ("-mask" if self.masked else "")
                + ("-compact" if self.compact else ""))  # fmt: skip

    def arrays(self, seed: int = 0):
        """q, k, v packed; past (whole or compact, or None); key mask over every position (or None)."""
        rng = np.random.default_rng(seed)
        f = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
        B, S, P, D = self.batch, self.seq, self.past, self.head_size
        q, k, v = f(B, S, self.heads * D), f(B, S, self.kv_heads * D), f(B, S, self.kv_heads * D)
        mask = None
        if self.masked:
            mask = (rng.random((B, P + S)) > 0.2).astype(np.int64)
            mask[0, :] = 1
            if B > 1:
                mask[1, : (P + S) // 2] = 0  # left padding: whole blocks without a real key
        past = None
        if P:
            past = (f(B, self.kv_heads, P, D), f(B, self.kv_heads, P, D))
            if self.compact:
                m = None if mask is None else mask[:, :P]
                past = tuple(numpy_reference.summarize(x, m, self.block) for x in past)
        return q, k, v, past, mask

    def reference(self):
        q, k, v, past, mask = self.arrays()
        return numpy_reference.hierarchical(q, k, v, *(past or (None, None)), mask, self.heads, self.kv_heads,
                                            self.causal, self.block)  # fmt: skip


HCASES = [
    # prefill: many blocks, a partial last block, GQA / MQA, padding, batch > 1
    HCase(2, 37, 0, 4, 2, 8, causal=True, block=4, masked=True),
    HCase(1, 40, 0, 4, 4, 8, causal=True, block=8),
    HCase(3, 29, 0, 4, 1, 8, causal=False, block=4, masked=True),
    HCase(2, 23, 0, 2, 2, 4, causal=False, block=5),
    HCase(2, 3, 0, 4, 2, 8, causal=True, block=8, masked=True),  # shorter than a block
    # a whole past: decode steps and chunks crossing block boundaries
    HCase(2, 1, 30, 4, 2, 8, causal=True, block=4, masked=True),
    HCase(2, 7, 33, 4, 2, 8, causal=True, block=4, masked=True),
    # a compact past (summaries of complete blocks, then the open block's keys)
    HCase(2, 1, 30, 4, 2, 8, causal=True, block=4, masked=True, compact=True),
    HCase(2, 1, 32, 4, 2, 8, causal=True, block=4, masked=True, compact=True),
    HCase(2, 11, 27, 4, 2, 8, causal=True, block=4, masked=True, compact=True),
    HCase(1, 5, 19, 4, 1, 8, causal=False, block=3, masked=True, compact=True),
]

"""The attributes of one ``fastattn::Attention`` op: which keys each query may see.

The contract (see docs/attention_op.md) in one place, torch-free:

* keys are numbered 0..L-1 over the whole cache (past + new); the S queries are the
  last S positions, L-S..L-1 (bottom-right aligned, as in a KV-cached decoder);
* ``causal``: a query at position p sees keys j <= p;
* ``window`` W > 0: a query sees keys with |p - j| < W, i.e. W keys including itself
  when causal (the Hugging Face ``sliding_window`` convention), W-1 on each side
  otherwise; 0 means unbounded;
* ``global_tokens`` G > 0 (only meaningful with a window): keys 0..G-1 are seen by every
  query and queries 0..G-1 see every key, still subject to ``causal``;
* ``block`` B > 0 (hierarchical attention, B >= 2, without window or global tokens): the
  sequence is cut into blocks of B positions (block of position p: p // B); a query sees
  the keys of its own block (j <= p when causal) and one summary key/value per earlier
  block (causal) or per other block (bidirectional): the mean of that block's real
  (unmasked) keys and the mean of its values. A block with no real key has no summary.
  The past may hold the summaries of its first n blocks in place of their keys (a
  compact cache, see :meth:`AttentionSpec.summaries`);
* a query that can see no key at all (every key padded away) outputs zeros.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from enum import StrEnum


class AttentionKind(StrEnum):
    """Which keys a query sees, in short (reports, manifests, lowering rules)."""

    FULL = "full"
    CAUSAL = "causal"
    SLIDING = "sliding"
    GLOBAL_LOCAL = "global_local"
    HIERARCHICAL = "hierarchical"


@dataclass(frozen=True)
class AttentionSpec:
    num_heads: int
    kv_num_heads: int
    causal: bool = False
    window: int = 0
    global_tokens: int = 0
    scale: float = 0.0  # 0 = 1/sqrt(head_size)
    block: int = 0  # hierarchical: positions per block (>= 2); 0 = off

    def __post_init__(self) -> None:
        if self.num_heads <= 0 or self.kv_num_heads <= 0 or self.num_heads % self.kv_num_heads:
            raise ValueError(
                f"kv_num_heads ({self.kv_num_heads}) must be positive and divide num_heads ({self.num_heads})"
            )
        if self.window < 0 or self.global_tokens < 0:
            raise ValueError("window and global_tokens must be >= 0")
        if self.global_tokens and not self.window:
            raise ValueError("global_tokens needs a window (with no window every token is already global)")
        if self.block < 0 or self.block == 1:
            raise ValueError(f"block must be 0 (off) or >= 2, got {self.block}")
        if self.block and self.window:
            raise ValueError("block (hierarchical) and window (sliding / global+local) exclude each other")

    @property
    def group_size(self) -> int:
        """Query heads per key/value head (1 = MHA, num_heads = MQA)."""
        return self.num_heads // self.kv_num_heads

    @property
    def kind(self) -> AttentionKind:
        """Full, causal, sliding, global+local or hierarchical."""
        if self.block:
            return AttentionKind.HIERARCHICAL
        if self.global_tokens:
            return AttentionKind.GLOBAL_LOCAL
        if self.window:
            return AttentionKind.SLIDING
        return AttentionKind.CAUSAL if self.causal else AttentionKind.FULL

    @property
    def cache_limit(self) -> int:
        """Cache positions a causal windowed layer needs to keep (G global + the last W-1); 0 = all.

        A future query at position p sees keys p-W+1..p and the G global keys, so keys
        older than that are never read again (see :mod:`fastattn.models.cache`).
        """
        return self.global_tokens + self.window - 1 if self.causal and self.window else 0

    def summaries(self, tokens: int, slots: int) -> int:
        """How many leading cache slots hold block summaries (hierarchical only).

        ``tokens`` positions (the key mask's width) kept in ``slots`` cache slots: a compact
        cache holds n summaries then the keys of positions nB.., so
        slots = n + tokens - n·B, i.e. n = (tokens - slots) / (B - 1). A whole cache (slots =
        tokens) has none.
        """
        if not self.block:
            return 0
        extra = tokens - slots
        if extra < 0 or extra % (self.block - 1):
            raise ValueError(
                f"a hierarchical cache of {slots} slots cannot hold {tokens} positions in blocks of {self.block}"
            )
        return extra // (self.block - 1)

    def head_scale(self, head_size: int) -> float:
        return self.scale or 1.0 / math.sqrt(head_size)

    def to_dict(self) -> dict:
        return asdict(self)

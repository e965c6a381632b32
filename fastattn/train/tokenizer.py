"""Tokenizers of fastattn-trained models, stored in the checkpoint as a small dict.

A tokenizer maps text to token ids and back; ``to_dict()`` gives ``{"kind": ..., ...}``
and :func:`from_dict` rebuilds it through a registry of kinds, so a new kind (say a
character-level one) is a class plus one registry entry. Only ``bytes`` exists today:
ids are the UTF-8 bytes of the text (vocab 256), and decoding replaces byte sequences
that are not UTF-8 (a model can generate any byte).

Torch-free (stdlib and numpy only): the runtime decodes generated ids with it.
"""

from __future__ import annotations

from typing import ClassVar, Protocol

import numpy as np

from fastattn.errors import LoadError


class Tokenizer(Protocol):
    kind: ClassVar[str]
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...

    def encode_array(self, text: str) -> np.ndarray:
        """The ids of ``text`` as a 1-D int64 array (cheap for whole files)."""
        ...

    def decode(self, ids: list[int]) -> str: ...

    def to_dict(self) -> dict: ...


class ByteTokenizer:
    """UTF-8 bytes as ids 0..255."""

    kind: ClassVar[str] = "bytes"
    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_array(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)

    def decode(self, ids: list[int]) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")

    def to_dict(self) -> dict:
        return {"kind": self.kind, "vocab_size": self.vocab_size}

    @classmethod
    def from_dict(cls, d: dict) -> ByteTokenizer:
        if d.get("vocab_size", cls.vocab_size) != cls.vocab_size:
            raise LoadError(f"a bytes tokenizer has vocab_size 256, not {d['vocab_size']}")
        return cls()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ByteTokenizer)

    def __hash__(self) -> int:
        return hash(self.kind)


KINDS: dict[str, type] = {ByteTokenizer.kind: ByteTokenizer}


def from_dict(d: dict) -> Tokenizer:
    """The tokenizer described by ``d`` (as written by ``to_dict()``)."""
    kind = d.get("kind") if isinstance(d, dict) else None
    if kind not in KINDS:
        raise LoadError(f"unknown tokenizer kind {kind!r}", f"known kinds: {', '.join(KINDS)}")
    return KINDS[kind].from_dict(d)

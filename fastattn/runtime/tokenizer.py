"""The tokenizer an export carries (``tokenizer.json``), torch-free.

The exporter writes ``tokenizer.json`` when the checkpoint was trained by ``fastattn
train``; its format is ``fastattn.train.tokenizer``'s ``to_dict()``. Only the ``bytes``
kind exists: ids are UTF-8 bytes. The codec is duplicated here (a few lines) because
``fastattn.train`` imports torch and the runtime must not.
"""

from __future__ import annotations

import codecs
import json
import os
from pathlib import Path

from fastattn.errors import LoadError

TOKENIZER_NAME = "tokenizer.json"


class ByteTokenizer:
    """UTF-8 bytes as ids 0..255; decoding replaces bytes that are not UTF-8."""

    kind = "bytes"
    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")

    def stream(self) -> codecs.IncrementalDecoder:
        """A decoder for ids arriving one at a time: ``decode(bytes([id]))`` holds back partial characters."""
        return codecs.getincrementaldecoder("utf-8")(errors="replace")


def load_tokenizer(directory: str | os.PathLike) -> ByteTokenizer | None:
    """The tokenizer of an export directory; None when it has none (the model takes token ids)."""
    path = Path(directory) / TOKENIZER_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise LoadError(f"cannot read {path}: {e}", "re-export the model") from e
    kind = data.get("kind") if isinstance(data, dict) else None
    if kind != ByteTokenizer.kind:
        raise LoadError(f"{path} has tokenizer kind {kind!r}; this runtime reads 'bytes'", "pass --prompt-ids")
    if data.get("vocab_size", 256) != 256:
        raise LoadError(f"{path}: a bytes tokenizer has vocab_size 256, not {data['vocab_size']}",
                        "re-export the model")  # fmt: skip
    return ByteTokenizer()

"""The tokenizer an export carries (``tokenizer.json``), torch-free.

Two kinds, told apart by the file's content:

* ``{"kind": "bytes"}``, written for checkpoints trained by ``fastattn train``: ids are UTF-8
  bytes (:class:`ByteTokenizer`; the codec is duplicated here, a few lines, because
  ``fastattn.train`` imports torch and the runtime must not);
* a Hugging Face ``tokenizers`` file, copied from the checkpoint of a Hugging Face model
  (:class:`HFTokenizer`, read with the ``tokenizers`` package; special tokens such as BOS are
  added as the checkpoint's post-processor says, and left out when decoding).

Both encode text to ids, decode ids to text, and stream: ``stream(prompt_ids)`` returns a
:class:`TextStream` whose ``push(id)`` gives the text each new token completes.
"""

from __future__ import annotations

import codecs
import json
import os
from pathlib import Path
from typing import Protocol

from fastattn.errors import LoadError

TOKENIZER_NAME = "tokenizer.json"


class TextStream(Protocol):
    def push(self, token: int) -> str:
        """The text this token completes ('' while a character or word is still partial)."""

    def end(self) -> str:
        """Whatever is still held back."""


class _ByteStream:
    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token: int) -> str:
        return self._decoder.decode(bytes([token]))

    def end(self) -> str:
        return self._decoder.decode(b"", final=True)


class ByteTokenizer:
    """UTF-8 bytes as ids 0..255; decoding replaces bytes that are not UTF-8."""

    kind = "bytes"
    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")

    def stream(self, prompt: list[int] | None = None) -> TextStream:
        """A decoder for ids arriving one at a time: holds back partial characters."""
        return _ByteStream()


class _HFStream:
    def __init__(self, tokenizer, prompt: list[int]) -> None:
        from tokenizers.decoders import DecodeStream

        self._tokenizer = tokenizer
        self._stream = DecodeStream(ids=list(prompt), skip_special_tokens=True)
        self._prompt: list[int] = list(prompt)
        self._new: list[int] = []
        self._emitted = ""

    def push(self, token: int) -> str:
        self._new.append(int(token))
        text = self._stream.step(self._tokenizer, int(token)) or ""
        self._emitted += text
        return text

    def end(self) -> str:
        """What the stream still holds (a partial character): the full decode's tail."""
        decode = lambda ids: self._tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
        done = decode(self._prompt) + self._emitted
        full = decode(self._prompt + self._new)
        return full[len(done) :] if full.startswith(done) else ""


class HFTokenizer:
    """A Hugging Face ``tokenizers`` tokenizer (the checkpoint's ``tokenizer.json``)."""

    kind = "huggingface"

    def __init__(self, tokenizer) -> None:
        self._tokenizer = tokenizer
        self.vocab_size = tokenizer.get_vocab_size()

    @classmethod
    def from_file(cls, path: Path) -> HFTokenizer:
        from tokenizers import Tokenizer

        try:
            tokenizer = Tokenizer.from_file(str(path))
            tokenizer.no_padding()  # a prompt is its own tokens: padding is the runtime's business
            return cls(tokenizer)
        except Exception as e:  # the tokenizers package reports a bad file as a plain Exception
            raise LoadError(f"cannot read {path} with the tokenizers package: {e}", "re-export the model") from e

    def encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(text).ids

    def decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)

    def stream(self, prompt: list[int] | None = None) -> TextStream:
        """Streaming decode continuing after ``prompt`` (word pieces join as the full decode would)."""
        return _HFStream(self._tokenizer, prompt or [])


Tokenizer = ByteTokenizer | HFTokenizer


def load_tokenizer(directory: str | os.PathLike) -> Tokenizer | None:
    """The tokenizer of an export directory; None when it has none (the model takes token ids)."""
    path = Path(directory) / TOKENIZER_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LoadError(f"cannot read {path}: {e}", "re-export the model") from e
    if isinstance(data, dict) and "model" in data and "kind" not in data:
        return HFTokenizer.from_file(path)
    kind = data.get("kind") if isinstance(data, dict) else None
    if kind != ByteTokenizer.kind:
        raise LoadError(f"{path} has tokenizer kind {kind!r}; this runtime reads 'bytes' and Hugging Face "
                        "tokenizer files", "pass --prompt-ids")  # fmt: skip
    if data.get("vocab_size", 256) != 256:
        raise LoadError(f"{path}: a bytes tokenizer has vocab_size 256, not {data['vocab_size']}",
                        "re-export the model")  # fmt: skip
    return ByteTokenizer()

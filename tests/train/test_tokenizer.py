"""The byte tokenizer: round trips, invalid bytes, its dict form, and no torch import."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from fastattn.errors import LoadError
from fastattn.train.tokenizer import ByteTokenizer, from_dict

TOKENIZER = ByteTokenizer()


@pytest.mark.parametrize("text", ["def f(x):\n    return x + 1\n", "", "naïve café — 日本語 🐍", "\x00\t\r\n"])
def test_round_trip(text):
    ids = TOKENIZER.encode(text)
    assert ids == list(text.encode("utf-8")) and all(0 <= i < 256 for i in ids)
    assert TOKENIZER.decode(ids) == text
    assert TOKENIZER.encode_array(text).dtype == np.int64
    assert TOKENIZER.encode_array(text).tolist() == ids


def test_non_ascii_is_several_bytes_per_character():
    assert TOKENIZER.encode("é🐍") == [0xC3, 0xA9, 0xF0, 0x9F, 0x90, 0x8D]


def test_decode_replaces_invalid_utf8():
    assert TOKENIZER.decode([104, 0xFF, 105]) == "h\ufffdi"
    assert TOKENIZER.decode([0xF0, 0x9F]) == "\ufffd"  # a truncated 4-byte character


def test_dict_round_trip():
    d = TOKENIZER.to_dict()
    assert d == {"kind": "bytes", "vocab_size": 256}
    assert from_dict(d) == TOKENIZER


@pytest.mark.parametrize("d", [{"kind": "bpe"}, {}, {"kind": "bytes", "vocab_size": 300}])
def test_bad_dict(d):
    with pytest.raises(LoadError):
        from_dict(d)


def test_importing_it_does_not_import_torch():
    code = "import sys, fastattn.train.tokenizer; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0

"""Held-out text for the accuracy gates of Hugging Face models: fastattn's stdlib corpus, tokenized
with the model's own tokenizer (``tokenizer.json``), never random ids.

    text-generation        N windows of S tokens of the held-out token stream; labels = next token
    feature-extraction     N paragraphs (blank-line separated) encoded with the tokenizer's special
                           tokens, at most S tokens, right-padded: mean-pooled embeddings are compared
    text2text-generation   paragraph i as the source, paragraph i+1 as the target (teacher-forced:
                           the decoder reads decoder_start + target[:-1]); labels = target

Only files of the corpus's held-out split are read (:func:`fastattn.train.corpus.is_heldout`),
in path order, until the set is full; the result is the same on every machine with the same
Python. Arrays follow :mod:`fastattn.quantize.accuracy`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from fastattn.families.hf.spec import Task
from fastattn.quantize.accuracy import IGNORE, EvalSet
from fastattn.train.corpus import is_heldout, source_files, stdlib_root

log = logging.getLogger(__name__)

SAMPLES = {Task.TEXT_GENERATION: 16, Task.FEATURE_EXTRACTION: 32, Task.TEXT2TEXT_GENERATION: 16}
LENGTH = {Task.TEXT_GENERATION: 128, Task.FEATURE_EXTRACTION: 128, Task.TEXT2TEXT_GENERATION: 64}
MIN_TOKENS = 8  # shorter paragraphs are skipped


def _heldout_texts() -> Iterator[str]:
    for rel, path in source_files(stdlib_root()):
        if is_heldout(rel):
            try:
                yield path.read_bytes().decode("utf-8")
            except UnicodeDecodeError:
                continue


def _paragraphs() -> Iterator[str]:
    for text in _heldout_texts():
        for block in text.split("\n\n"):
            if block.strip():
                yield block.strip("\n")


def text_eval_set(tokenizer_json: Path, task: Task, pad_id: int, decoder_start: int | None = None,
                  max_length: int | None = None) -> EvalSet:  # fmt: skip
    """The evaluation set of a model whose tokenizer is ``tokenizer_json`` (see the module docstring)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_json))
    tokenizer.no_padding()  # a tokenizer.json may pad and truncate on its own: rows are cut and padded here
    tokenizer.no_truncation()
    samples, length = SAMPLES[task], LENGTH[task]
    if max_length:
        length = min(length, max_length)
    if task is Task.TEXT_GENERATION:
        arrays = _lm(tokenizer, samples, length)
    elif task is Task.FEATURE_EXTRACTION:
        ids, mask = _padded(_encoded(tokenizer, length, samples), length, pad_id)
        arrays = {"input_ids": ids, "attention_mask": mask}
    else:
        arrays = _seq2seq(tokenizer, samples, length, pad_id, decoder_start if decoder_start is not None else pad_id)
    what = {Task.TEXT_GENERATION: f"windows of {length} tokens",
            Task.FEATURE_EXTRACTION: f"paragraphs of <= {length} tokens",
            Task.TEXT2TEXT_GENERATION: f"paragraph pairs of <= {length} tokens"}[task]  # fmt: skip
    rows = len(next(iter(arrays.values())))
    return EvalSet(arrays, f"held-out stdlib text ({rows} {what}, the model's tokenizer)")


def _lm(tokenizer, samples: int, length: int) -> dict[str, np.ndarray]:
    stream: list[int] = []
    for text in _heldout_texts():
        stream += tokenizer.encode(text, add_special_tokens=False).ids
        if len(stream) >= samples * length:
            break
    rows = min(samples, len(stream) // length)
    ids = np.array(stream[: rows * length], np.int64).reshape(rows, length)
    labels = np.full_like(ids, IGNORE)
    labels[:, :-1] = ids[:, 1:]
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "labels": labels}


def _encoded(tokenizer, length: int, count: int) -> list[list[int]]:
    found = []
    for paragraph in _paragraphs():
        ids = tokenizer.encode(paragraph).ids[:length]
        if len(ids) >= MIN_TOKENS:
            found.append(ids)
        if len(found) == count:
            break
    return found


def _padded(rows: list[list[int]], length: int, pad_id: int, fill: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    ids = np.full((len(rows), length), pad_id if fill is None else fill, np.int64)
    mask = np.zeros((len(rows), length), np.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)], mask[i, : len(row)] = row, 1
    return ids, mask


def _seq2seq(tokenizer, samples: int, length: int, pad_id: int, start: int) -> dict[str, np.ndarray]:
    paragraphs = _encoded(tokenizer, length, 2 * samples)
    sources, targets = paragraphs[0::2], paragraphs[1::2]
    count = min(len(sources), len(targets))
    enc_ids, enc_mask = _padded(sources[:count], length, pad_id)
    dec_ids, dec_mask = _padded([[start, *t[:-1]] for t in targets[:count]], length, pad_id)
    labels, _ = _padded([t for t in targets[:count]], length, pad_id, fill=IGNORE)
    return {"encoder_input_ids": enc_ids, "encoder_attention_mask": enc_mask, "decoder_input_ids": dec_ids,
            "decoder_attention_mask": dec_mask, "labels": labels}  # fmt: skip

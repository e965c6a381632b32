"""Training tasks on the stdlib corpus: batches, a held-out evaluation set and its metrics.

A task draws training batches from the training files and builds its evaluation set from
held-out files only. Batches and evaluation sets are dicts of int64 tensors named like
the exported graphs' inputs (what :mod:`fastattn.quantize.accuracy` reads), plus
``labels``; N = samples, S = ``seq``:

    task        model           arrays (shapes)                                   metrics
    lm          decoder         input_ids, attention_mask, labels (N, S)          loss, perplexity,
                                labels[i, t] = input_ids[i, t+1] of the text       bits_per_byte, accuracy
    classifier  encoder with    input_ids, attention_mask (N, S); labels (N,)     loss, accuracy,
                num_labels = K  the package a snippet comes from (CLASSES[:K])    chance
    seq2seq     encoder-decoder encoder_input_ids, encoder_attention_mask (N, S)  loss, perplexity,
                                decoder_input_ids, decoder_attention_mask,        bits_per_byte, accuracy
                                labels (N, S//2): the S//2 bytes after the source,
                                teacher-forced (decoder input = labels shifted
                                right by one, starting with the source's last byte)

``loss`` is the mean cross-entropy in nats per label; ``perplexity`` = exp(loss);
``bits_per_byte`` = loss / ln 2 (byte tokenizer: one token per byte); ``accuracy`` is the
fraction of labels the argmax gets right (next byte; for the classifier, the package of a
snippet), ``chance`` = 1/K. Defaults: N = 32 (classifier: 32 per class), S = 256 for lm,
128 otherwise.
Masks are all ones (no padding): decoders get no past, so a decoder graph is fed these
arrays plus empty ``past_*`` caches (batch, kv_heads, 0, head_size).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from fastattn.errors import InputError
from fastattn.models.config import Arch, ModelConfig, Positions
from fastattn.models.transformer import FastAttnModel
from fastattn.train.corpus import Corpus
from fastattn.train.tokenizer import Tokenizer

Batch = dict[str, torch.Tensor]
_STREAMS: dict[tuple, np.ndarray] = {}  # (corpus, tokenizer, split, package) -> ids, in the smallest dtype

# Packages of the classifier, in label order: K labels use the first K. Each has at least
# three held-out files and 20 kB of held-out text. Ordered by how well a byte-bigram naive
# Bayes model tells them apart on held-out 128-byte snippets (77% over the first 8, 12.5%
# chance), so a small K gets the most distinct packages.
CLASSES = (
    "asyncio", "email", "encodings", "distutils", "ctypes", "unittest",
    "idlelib", "tkinter", "xml", "multiprocessing", "importlib", "lib2to3",
)  # fmt: skip


class Task(ABC):
    """One training objective: batches, held-out evaluation set, loss and metrics."""

    name: ClassVar[str]
    arch: ClassVar[Arch]
    default_seq: ClassVar[int]
    eval_samples: ClassVar[int]  # default evaluation samples (per class for the classifier)

    def __init__(self, config: ModelConfig, corpus: Corpus, tokenizer: Tokenizer, seq: int | None = None):
        self.config, self.corpus, self.tokenizer = config, corpus, tokenizer
        self.seq = seq or self.default_seq
        self.check()

    def check(self) -> None:
        """Raise :class:`InputError` if the model cannot learn this task."""
        cfg = self.config
        if cfg.arch is not self.arch:
            raise InputError(
                f"task {self.name} trains {_article(self.arch)} model, not {_article(cfg.arch)}",
                f"give {_article(self.arch)} config or preset",
            )
        if cfg.vocab_size < self.tokenizer.vocab_size:
            raise InputError(
                f"vocab_size {cfg.vocab_size} is smaller than the {self.tokenizer.kind} tokenizer's "
                f"{self.tokenizer.vocab_size}", f"use vocab_size {self.tokenizer.vocab_size}"
            )  # fmt: skip
        if self.seq < 2:
            raise InputError(f"sequence length {self.seq} is too short", "use --seq 16 or more")
        if cfg.positions is Positions.LEARNED and self.longest() > cfg.max_positions:
            raise InputError(
                f"sequence length {self.longest()} exceeds the model's {cfg.max_positions} learned positions",
                f"use --seq {cfg.max_positions} or less",
            )

    def longest(self) -> int:
        return self.seq

    def stream(self, heldout: bool, package: str | None = None) -> np.ndarray:
        """The ids of a split (of one package's files only, if given), concatenated; cached per process."""
        key = (self.corpus.root, self.corpus.identity, repr(self.tokenizer.to_dict()), heldout, package)
        if key not in _STREAMS:
            docs = [d for d in self.corpus.split(heldout) if package is None or d.package == package]
            dtype = np.uint8 if self.tokenizer.vocab_size <= 256 else np.int32
            _STREAMS[key] = np.concatenate([self.tokenizer.encode_array(d.text).astype(dtype) for d in docs])
        return _STREAMS[key]

    @abstractmethod
    def batch(self, rng: np.random.Generator, size: int) -> Batch:
        """A training batch of ``size`` samples from the training files."""

    @abstractmethod
    def eval_set(self, samples: int | None = None) -> Batch:
        """The held-out evaluation set (deterministic)."""

    @abstractmethod
    def logits(self, model: FastAttnModel, batch: Batch, masked: bool = True) -> torch.Tensor:
        """Logits aligned with ``batch["labels"]`` (``masked=False`` skips the all-ones masks)."""

    def loss(self, model: FastAttnModel, batch: Batch, masked: bool = True) -> torch.Tensor:
        logits = self.logits(model, batch, masked)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), batch["labels"].reshape(-1))

    def tokens(self, batch: Batch) -> int:
        """Tokens a batch feeds the model (for tokens/s)."""
        return sum(v.numel() for k, v in batch.items() if k.endswith("input_ids"))

    @torch.no_grad()
    def metrics(self, model: FastAttnModel, data: Batch, batch_size: int = 16) -> dict[str, float]:
        """Held-out figures of ``model`` on ``data``, through the same calls as the exported graphs."""
        was_training = model.training
        model.eval()
        total, count, correct = 0.0, 0, 0
        n = len(data["labels"])
        for start in range(0, n, batch_size):
            part = {k: v[start : start + batch_size] for k, v in data.items()}
            logits = self.logits(model, part).float()
            flat, labels = logits.reshape(-1, logits.shape[-1]), part["labels"].reshape(-1)
            total += float(F.cross_entropy(flat, labels, reduction="sum"))
            count += labels.numel()
            correct += int((flat.argmax(-1) == labels).sum())
        model.train(was_training)
        return self.figures(total / count, correct / count)

    def figures(self, loss: float, accuracy: float) -> dict[str, float]:
        return {"loss": loss, "perplexity": math.exp(loss), "bits_per_byte": loss / math.log(2), "accuracy": accuracy}


class LanguageModel(Task):
    """Next-byte prediction on held-out stdlib text (decoder-only)."""

    name, arch, default_seq, eval_samples = "lm", Arch.DECODER, 256, 32

    def batch(self, rng: np.random.Generator, size: int) -> Batch:
        return self._pack(_windows(self.stream(False), self.seq + 1, rng.integers, size))

    def eval_set(self, samples: int | None = None) -> Batch:
        return self._pack(_windows(self.stream(True), self.seq + 1, None, samples or self.eval_samples))

    def _pack(self, w: torch.Tensor) -> Batch:
        ids = w[:, :-1]
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": w[:, 1:]}

    def logits(self, model, batch, masked=True):
        return model(batch["input_ids"], batch["attention_mask"] if masked else None)[0]


class PackageClassifier(Task):
    """Which stdlib package (:data:`CLASSES`) a snippet of ``seq`` bytes comes from (encoder)."""

    name, arch, default_seq, eval_samples = "classifier", Arch.ENCODER, 128, 32

    def check(self) -> None:
        super().check()
        if not 2 <= self.config.num_labels <= len(CLASSES):
            raise InputError(
                f"the classifier needs 2 to {len(CLASSES)} labels (stdlib packages), the model has "
                f"num_labels={self.config.num_labels}", f"use --labels between 2 and {len(CLASSES)}"
            )  # fmt: skip

    @property
    def classes(self) -> tuple[str, ...]:
        return CLASSES[: self.config.num_labels]

    def _streams(self, heldout: bool) -> list[np.ndarray]:
        return [self.stream(heldout, c) for c in self.classes]

    def batch(self, rng: np.random.Generator, size: int) -> Batch:
        labels = rng.integers(0, len(self.classes), size)
        streams = self._streams(False)
        ids = torch.cat([_windows(streams[c], self.seq, rng.integers, 1) for c in labels])
        return self._pack(ids, torch.from_numpy(labels).long())

    def eval_set(self, samples: int | None = None) -> Batch:
        """``samples`` snippets per class, evenly spaced over its held-out files, classes interleaved."""
        per_class = samples or self.eval_samples
        parts = [_windows(s, self.seq, None, per_class) for s in self._streams(True)]
        ids = torch.stack(parts, 1).reshape(-1, self.seq)  # sample i has label i % K
        labels = torch.arange(len(parts)).repeat(per_class)
        return self._pack(ids, labels)

    def _pack(self, ids: torch.Tensor, labels: torch.Tensor) -> Batch:
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}

    def logits(self, model, batch, masked=True):
        return model(batch["input_ids"], batch["attention_mask"] if masked else None)[1]

    def figures(self, loss: float, accuracy: float) -> dict[str, float]:
        return {"loss": loss, "accuracy": accuracy, "chance": 1 / len(self.classes)}


class Continuation(Task):
    """Encoder reads ``seq`` bytes, decoder writes the next ``seq // 2`` (encoder-decoder)."""

    name, arch, default_seq, eval_samples = "seq2seq", Arch.ENCODER_DECODER, 128, 32

    @property
    def target(self) -> int:
        return max(self.seq // 2, 1)

    def batch(self, rng: np.random.Generator, size: int) -> Batch:
        return self._pack(_windows(self.stream(False), self.seq + self.target, rng.integers, size))

    def eval_set(self, samples: int | None = None) -> Batch:
        return self._pack(_windows(self.stream(True), self.seq + self.target, None, samples or self.eval_samples))

    def _pack(self, w: torch.Tensor) -> Batch:
        S, T = self.seq, self.target
        source, decoder_ids = w[:, :S], w[:, S - 1 : S + T - 1]
        return {
            "encoder_input_ids": source,
            "encoder_attention_mask": torch.ones_like(source),
            "decoder_input_ids": decoder_ids,
            "decoder_attention_mask": torch.ones_like(decoder_ids),
            "labels": w[:, S:],
        }

    def logits(self, model, batch, masked=True):
        enc_mask = batch["encoder_attention_mask"] if masked else None
        dec_mask = batch["decoder_attention_mask"] if masked else None
        memory = model.encode(batch["encoder_input_ids"], enc_mask)
        return model.decode(batch["decoder_input_ids"], model.cross_kv(memory), enc_mask, dec_mask)[0]


TASKS: dict[str, type[Task]] = {t.name: t for t in (LanguageModel, PackageClassifier, Continuation)}


def make(name: str, config: ModelConfig, corpus: Corpus, tokenizer: Tokenizer, seq: int | None = None) -> Task:
    try:
        cls = TASKS[name]
    except KeyError:
        raise InputError(f"unknown task {name!r}", f"available tasks: {', '.join(TASKS)}") from None
    return cls(config, corpus, tokenizer, seq)


def _windows(stream: np.ndarray, length: int, integers, count: int) -> torch.Tensor:
    """``count`` windows of ``length`` ids: random starts from ``integers`` (rng.integers) or evenly spaced."""
    last = len(stream) - length
    if last < 0:
        raise InputError(f"the corpus split has {len(stream)} tokens, fewer than one sample of {length}",
                         "use a shorter --seq")  # fmt: skip
    starts = integers(0, last + 1, count) if integers else np.linspace(0, last, count).astype(np.int64)
    return torch.from_numpy(stream[starts[:, None] + np.arange(length)].astype(np.int64))


def _article(arch: Arch) -> str:
    return {Arch.ENCODER: "an encoder", Arch.DECODER: "a decoder", Arch.ENCODER_DECODER: "an encoder-decoder"}[arch]

"""Trained checkpoints cached on disk, so test gates get trained weights without retraining.

    trained("lm", preset("default"), steps=300) -> ~/.cache/fastattn/trained/lm-default-<key>.pt

The directory is ``$FASTATTN_CACHE/trained`` (``~/.cache/fastattn/trained`` when unset).
The key hashes everything that decides the weights: task, config, the training options
(steps, batch, seq, seed, lr, schedule, precision, ...), tokenizer, corpus identity
(Python version + file list) and :data:`~fastattn.train.trainer.TRAINER_VERSION`.

Each entry is a fastattn checkpoint with ``tokenizer``, ``eval`` and ``metrics`` (see
:mod:`fastattn.models.checkpoint`) and a ``.json`` record of the run beside it. A
checkpoint appears under its final name only when complete (temporary file + rename), and
concurrent callers (pytest-xdist workers) serialise on a lock file per key, so the model
is trained once and nobody reads a partial file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

from fastattn.files import write_atomic
from fastattn.models import checkpoint
from fastattn.models.config import ModelConfig
from fastattn.train import corpus
from fastattn.train.tokenizer import ByteTokenizer
from fastattn.train.trainer import TRAINER_VERSION, Progress, TrainOptions, train

try:
    import fcntl
except ImportError:  # not POSIX: the atomic rename alone keeps files whole (a race trains twice)
    fcntl = None

log = logging.getLogger(__name__)

CACHE_ENV = "FASTATTN_CACHE"


def cache_dir() -> Path:
    base = os.environ.get(CACHE_ENV)
    return (Path(base).expanduser() if base else Path.home() / ".cache" / "fastattn") / "trained"


def cache_key(task: str, config: ModelConfig, options: TrainOptions) -> str:
    """16 hex digits naming one training run."""
    record = {
        "task": task,
        "config": config.to_dict(),
        "options": options.key(config),
        "tokenizer": ByteTokenizer().to_dict(),
        "corpus": corpus.identity(),
        "trainer": TRAINER_VERSION,
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]


def cache_path(task: str, config: ModelConfig, options: TrainOptions) -> Path:
    """Where the checkpoint of this run lives (whether or not it exists yet)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", config.name)
    return cache_dir() / f"{task}-{name}-{cache_key(task, config, options)}.pt"


def trained(
    task: str,
    config: ModelConfig,
    steps: int,
    seed: int = 0,
    *,
    batch: int = 16,
    seq: int | None = None,
    options: TrainOptions | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> Path:
    """The checkpoint of ``config`` trained on ``task``: from the cache, or trained now and cached.

    ``options`` holds the rest of the recipe (lr, schedule, threads, ...); its steps, batch,
    seq and seed are replaced by the arguments.
    """
    options = replace(options or TrainOptions(), steps=steps, batch=batch, seq=seq, seed=seed)
    path = cache_path(task, config, options)
    if path.exists():
        log.info("cached: %s", path)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path.with_name(f".{path.stem}.lock")):
        if path.exists():  # another process trained it while we waited
            return path
        log.info("training %s %s for %d steps -> %s", task, config.name, steps, path)
        result = train(task, config, options, progress)
        record = {
            "task": task, "config": config.to_dict(), "options": options.key(config), "corpus": corpus.identity(),
            "trainer": TRAINER_VERSION, "metrics": result.metrics, "initial_metrics": result.initial_metrics,
            "seconds": round(result.seconds, 2), "tokens": result.tokens,
            "tokens_per_second": round(result.tokens_per_second), "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }  # fmt: skip
        write_atomic(path.with_suffix(".json"), (json.dumps(record, indent=2) + "\n").encode())
        checkpoint.save(result.model, path, result.tokenizer.to_dict(), result.eval_data, result.metrics)
    return path


@contextlib.contextmanager
def _locked(lock: Path) -> Iterator[None]:
    if fcntl is None:
        yield
        return
    with open(lock, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)

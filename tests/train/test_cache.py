"""The trained-model cache: one training per key, the same file on later calls, safe under concurrency."""

from __future__ import annotations

import json
import threading

import pytest
import torch

from fastattn.models import LayerAttention, ModelConfig, checkpoint
from fastattn.train import cache
from fastattn.train.trainer import TrainOptions

TINY = ModelConfig(name="cache-lm", d_model=32, num_heads=2, kv_heads=1, ffn_dim=64, decoder_layers=(LayerAttention(),))
OPTIONS = TrainOptions(threads=1, eval_samples=4)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path))
    return tmp_path / "trained"


@pytest.fixture
def count_training(monkeypatch):
    calls = []
    real = cache.train

    def counting(*args, **kwargs):
        calls.append(args[:2])
        return real(*args, **kwargs)

    monkeypatch.setattr(cache, "train", counting)
    return calls


def test_second_call_returns_the_cached_file(cache_dir, count_training):
    first = cache.trained("lm", TINY, steps=5, batch=4, seq=32, options=OPTIONS)
    assert first.parent == cache_dir and first.name.startswith("lm-cache-lm-") and first.suffix == ".pt"
    stamp = first.stat().st_mtime_ns
    second = cache.trained("lm", TINY, steps=5, batch=4, seq=32, options=OPTIONS)
    assert second == first and second.stat().st_mtime_ns == stamp
    assert len(count_training) == 1
    # threads and logging do not change the weights, so not the key either
    assert cache.trained("lm", TINY, 5, batch=4, seq=32, options=TrainOptions(threads=2, eval_samples=4)) == first
    assert len(count_training) == 1


def test_entry_holds_trained_weights_eval_data_and_metrics(cache_dir):
    path = cache.trained("lm", TINY, steps=5, batch=4, seq=32, options=OPTIONS)
    payload = torch.load(path, weights_only=True)
    tokenizer, eval_data, metrics = checkpoint.extras(payload)
    assert tokenizer == {"kind": "bytes", "vocab_size": 256}
    assert {k: tuple(v.shape) for k, v in eval_data.items()} == {
        "input_ids": (4, 32), "attention_mask": (4, 32), "labels": (4, 32)
    }  # fmt: skip
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["metrics"] == pytest.approx(metrics)
    assert record["options"]["steps"] == 5 and record["tokens"] == 5 * 4 * 32
    assert metrics["loss"] < record["initial_metrics"]["loss"]
    assert checkpoint.from_payload(payload).config == TINY
    assert not list(cache_dir.glob("*.tmp"))


@pytest.mark.parametrize(
    "change",
    [{"config": TINY.replace(d_model=48)}, {"config": TINY.replace(name="other")}, {"steps": 6}, {"seed": 1},
     {"batch": 8}, {"seq": 16}, {"task": "seq2seq"}, {"options": TrainOptions(lr=1e-3)}],
)  # fmt: skip
def test_a_different_run_has_a_different_key(change):
    base = {"task": "lm", "config": TINY, "steps": 5, "seed": 0, "batch": 4, "seq": 32, "options": OPTIONS}
    key = lambda a: cache.cache_path(  # noqa: E731
        a["task"], a["config"],
        TrainOptions(**{**a["options"].__dict__, "steps": a["steps"], "seed": a["seed"], "batch": a["batch"],
                        "seq": a["seq"]}),
    )  # fmt: skip
    assert key({**base, **change}) != key(base)
    assert key(base) == key(dict(base))


def test_concurrent_callers_train_once(cache_dir, count_training):
    paths, errors = [], []

    def call():
        try:
            paths.append(cache.trained("lm", TINY, steps=5, batch=4, seq=32, options=OPTIONS))
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(paths)) == 1 and len(paths) == 3
    assert len(count_training) == 1


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "c"))
    assert cache.cache_dir() == tmp_path / "c" / "trained"
    monkeypatch.delenv(cache.CACHE_ENV)
    assert cache.cache_dir().parts[-3:] == (".cache", "fastattn", "trained")

"""Each task trains a tiny model whose held-out loss falls well below the untrained one, and its
evaluation set is named and shaped like the exported graphs' inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fastattn.errors import InputError
from fastattn.families.fastattn.graphs import model_graphs
from fastattn.models import LayerAttention, ModelConfig, build
from fastattn.models.config import Norm, Positions
from fastattn.train import corpus
from fastattn.train.tasks import CLASSES, make
from fastattn.train.tokenizer import ByteTokenizer
from fastattn.train.trainer import TrainOptions, train

FULL, SLIDING = LayerAttention(), LayerAttention.parse("sliding:16")
BASE = dict(d_model=48, num_heads=4, kv_heads=2, ffn_dim=96)
TINY = {
    "lm": ModelConfig(name="tiny-lm", decoder_layers=(SLIDING, FULL), norm=Norm.RMS, **BASE),
    "classifier": ModelConfig(name="tiny-cls", encoder_layers=(FULL, FULL), num_labels=4, positions=Positions.LEARNED,
                              max_positions=128, **BASE),
    "seq2seq": ModelConfig(name="tiny-s2s", encoder_layers=(FULL,), decoder_layers=(SLIDING,), **BASE),
}  # fmt: skip
OPTIONS = {  # a second or two each on one thread
    "lm": TrainOptions(steps=40, batch=16, seq=64, lr=3e-3, threads=1, eval_samples=16),
    "classifier": TrainOptions(steps=100, batch=16, seq=64, lr=1e-2, threads=1, eval_samples=16),
    "seq2seq": TrainOptions(steps=40, batch=16, seq=64, lr=3e-3, threads=1, eval_samples=16),
}


@pytest.fixture(scope="module")
def results():
    return {task: train(task, cfg, OPTIONS[task]) for task, cfg in TINY.items()}


@pytest.mark.parametrize("task", TINY)
def test_held_out_loss_drops(results, task):
    r = results[task]
    assert r.metrics["loss"] < r.initial_metrics["loss"] - 0.15, (r.initial_metrics, r.metrics)
    assert r.tokens > 0 and r.tokens_per_second > 0 and len(r.losses) == OPTIONS[task].steps


def test_language_model_figures(results):
    lm = results["lm"]
    assert lm.initial_metrics["loss"] == pytest.approx(math.log(256), abs=0.3)  # starts near uniform
    assert lm.metrics["loss"] < 3.6  # below the ~4.5 bits of a byte unigram model
    assert lm.metrics["perplexity"] == pytest.approx(math.exp(lm.metrics["loss"]))
    assert lm.metrics["bits_per_byte"] == pytest.approx(lm.metrics["loss"] / math.log(2))
    assert results["seq2seq"].metrics["loss"] < 3.6


def test_classifier_beats_chance(results):
    cls = results["classifier"]
    assert cls.metrics["chance"] == 0.25
    assert cls.metrics["accuracy"] >= 0.375, cls.metrics  # 64 held-out snippets, 16 per package


def test_training_is_deterministic():
    options = TrainOptions(steps=3, batch=4, seq=32, threads=1, eval_samples=2)
    runs = []
    for process_seed in (1, 2):  # as in two processes: torch seeds each one at random
        torch.manual_seed(process_seed)
        runs.append(train("lm", TINY["lm"], options))
    a, b = runs
    assert a.losses == b.losses
    for (name, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(x, y), name


EXPECTED = {  # (name, shape) per task for N = 16 samples of S = 64 (classifier: 16 per class, 4 classes)
    "lm": {"input_ids": (16, 64), "attention_mask": (16, 64), "labels": (16, 64)},
    "classifier": {"input_ids": (64, 64), "attention_mask": (64, 64), "labels": (64,)},
    "seq2seq": {"encoder_input_ids": (16, 64), "encoder_attention_mask": (16, 64), "decoder_input_ids": (16, 32),
                "decoder_attention_mask": (16, 32), "labels": (16, 32)},
}  # fmt: skip


@pytest.mark.parametrize("task", TINY)
def test_eval_set_matches_the_graph_inputs(results, task):
    data = results[task].eval_data
    assert {k: tuple(v.shape) for k, v in data.items()} == EXPECTED[task]
    assert all(v.dtype == torch.int64 for v in data.values())
    graphs = model_graphs(build(TINY[task]))
    for graph in graphs:
        prefix = f"{graph.name}_" if len(graphs) > 1 else ""
        wanted = {s.name for s in graph.inputs if s.name in ("input_ids", "attention_mask")}
        assert {prefix + name for name in wanted} <= set(data), (graph.name, wanted)
    if task == "seq2seq":  # the decoder graph's encoder_attention_mask is the encoder's mask
        assert "encoder_attention_mask" in {s.name for s in graphs[1].inputs}


def test_eval_labels_follow_the_text(results):
    lm = results["lm"].eval_data
    assert torch.equal(lm["input_ids"][:, 1:], lm["labels"][:, :-1])
    s2s = results["seq2seq"].eval_data
    assert torch.equal(s2s["decoder_input_ids"][:, 0], s2s["encoder_input_ids"][:, -1])
    assert torch.equal(s2s["decoder_input_ids"][:, 1:], s2s["labels"][:, :-1])
    cls = results["classifier"].eval_data
    assert cls["labels"].tolist() == [0, 1, 2, 3] * 16
    assert all(v.max() < 256 and v.min() >= 0 for k, v in lm.items())


def test_eval_set_comes_from_held_out_files_only():
    c = corpus.load()
    job = make("lm", TINY["lm"], c, ByteTokenizer(), 32)
    heldout = job.stream(True).tobytes()
    for row in job.eval_set(8)["input_ids"]:
        assert bytes(row.tolist()) in heldout


def test_eval_metrics_match_a_plain_forward(results):
    """The figures are those of the exported graphs' call: model(input_ids, attention_mask)."""
    lm = results["lm"]
    data = lm.eval_data
    with torch.no_grad():
        logits = lm.model(data["input_ids"], data["attention_mask"])[0]
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 256), data["labels"].reshape(-1))
    assert float(loss) == pytest.approx(lm.metrics["loss"], rel=1e-5)


@pytest.mark.parametrize(
    "task, config, match",
    [
        ("lm", TINY["classifier"], "trains a decoder model, not an encoder"),
        ("seq2seq", TINY["lm"], "trains an encoder-decoder model, not a decoder"),
        ("classifier", TINY["classifier"].replace(num_labels=len(CLASSES) + 1), "needs 2 to 12 labels"),
        ("classifier", TINY["classifier"].replace(vocab_size=128), "vocab_size 128 is smaller"),
        ("nope", TINY["lm"], "unknown task 'nope'"),
    ],
)
def test_task_refuses_a_model_that_cannot_learn_it(task, config, match):
    with pytest.raises(InputError, match=match):
        make(task, config, corpus.load(), ByteTokenizer())


def test_learned_positions_limit_the_sequence():
    with pytest.raises(InputError, match="exceeds the model's 128 learned positions"):
        make("classifier", TINY["classifier"], corpus.load(), ByteTokenizer(), seq=200)


def test_batches_are_reproducible_from_the_seed():
    job = make("seq2seq", TINY["seq2seq"], corpus.load(), ByteTokenizer(), 32)
    a, b = (job.batch(np.random.default_rng(7), 4) for _ in range(2))
    assert all(torch.equal(a[k], b[k]) for k in a)

"""Checkpoint extras (tokenizer, eval data, metrics): round trips, format detection, old checkpoints."""

from __future__ import annotations

import pytest
import torch

from fastattn.errors import LoadError
from fastattn.families.load import ModelFormat, load_model
from fastattn.models import LayerAttention, ModelConfig, build, checkpoint, load, save

TINY = ModelConfig(name="ckpt", d_model=32, num_heads=2, kv_heads=1, ffn_dim=64, decoder_layers=(LayerAttention(),))
EVAL = {"input_ids": torch.arange(24).view(2, 12), "attention_mask": torch.ones(2, 12, dtype=torch.int64),
        "labels": torch.arange(1, 25).view(2, 12)}  # fmt: skip
METRICS = {"loss": 1.5, "perplexity": 4.4817, "bits_per_byte": 2.164}


def test_extras_round_trip(tmp_path):
    model = build(TINY)
    path = save(model, tmp_path / "m.pt", {"kind": "bytes", "vocab_size": 256}, EVAL, METRICS)
    payload = torch.load(path, weights_only=True)
    tokenizer, eval_data, metrics = checkpoint.extras(payload)
    assert tokenizer == {"kind": "bytes", "vocab_size": 256}
    assert eval_data.keys() == EVAL.keys() and all(torch.equal(eval_data[k], EVAL[k]) for k in EVAL)
    assert metrics == METRICS
    restored = checkpoint.from_payload(payload)
    for (name, a), b in zip(model.state_dict().items(), restored.state_dict().values()):
        assert torch.equal(a, b), name


def test_load_model_detects_a_checkpoint_with_extras(tmp_path):
    path = save(build(TINY), tmp_path / "m.pt", {"kind": "bytes"}, EVAL, METRICS)
    loaded = load_model(path)
    assert loaded.format is ModelFormat.FASTATTN
    assert checkpoint.extras(loaded.checkpoint)[2] == METRICS
    assert load(path).config == TINY


def test_old_checkpoints_still_load(tmp_path):
    model = build(TINY)
    plain = save(model, tmp_path / "plain.pt")
    assert checkpoint.extras(torch.load(plain, weights_only=True)) == (None, None, None)
    # exactly what the code before extras wrote
    old = tmp_path / "old.pt"
    torch.save({"format": "fastattn", "version": 1, "config": TINY.to_dict(), "state_dict": model.state_dict()}, old)
    assert load(old).config == TINY
    assert load_model(old).format is ModelFormat.FASTATTN
    assert checkpoint.extras(load_model(old).checkpoint) == (None, None, None)


def test_eval_views_are_saved_without_their_base(tmp_path):
    big = torch.zeros(1000, 1000, dtype=torch.int64)  # 8 MB
    path = save(build(TINY), tmp_path / "m.pt", eval_data={"input_ids": big[:2, :8]})
    assert path.stat().st_size < 1_000_000
    assert checkpoint.extras(torch.load(path, weights_only=True))[1]["input_ids"].shape == (2, 8)


def test_malformed_extras_are_a_load_error():
    with pytest.raises(LoadError, match="'metrics' holds a list"):
        checkpoint.extras({"format": "fastattn", "metrics": [1.0]})

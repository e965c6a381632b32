"""``fastattn train``: a tiny run end to end, and bad input as one line with a non-zero exit."""

from __future__ import annotations

import torch
from click.testing import CliRunner

from fastattn.cli import main
from fastattn.models import checkpoint
from fastattn.train.model_config import model_config

TINY = ["--layers", "1", "--d-model", "32", "--heads", "2", "--kv-heads", "1", "--ffn", "64"]


def cli(*args):
    return CliRunner().invoke(main, ["train", *map(str, args)], catch_exceptions=False)


def test_train_writes_a_checkpoint_with_held_out_metrics(tmp_path):
    out = tmp_path / "lm.pt"
    result = cli("lm", *TINY, "--steps", 20, "--batch", 4, "--seq", 32, "--threads", 1, "--log-every", 10, "-o", out)
    assert result.exit_code == 0, result.output
    assert "step     20/20" in result.output and "held-out: loss" in result.output
    tokenizer, eval_data, metrics = checkpoint.extras(torch.load(out, weights_only=True))
    assert tokenizer["kind"] == "bytes" and eval_data["input_ids"].shape == (32, 32)
    assert f"loss {metrics['loss']:.4g}" in result.output


def test_wrong_architecture_is_one_line_and_writes_nothing(tmp_path):
    result = cli("lm", "--preset", "encoder", "--steps", 2, "-o", tmp_path / "x.pt")
    assert result.exit_code == 2
    assert result.output.strip() == (
        "error: task lm trains a decoder model, not an encoder. Fix: give a decoder config or preset"
    )
    assert not list(tmp_path.iterdir())


def test_bad_model_options(tmp_path):
    result = cli("lm", "--d-model", 30, "--heads", 4, "-o", tmp_path / "x.pt")
    assert result.exit_code == 2 and "d_model (30) must be divisible by num_heads (4)" in result.output
    result = cli("classifier", "--labels", 13, "-o", tmp_path / "x.pt")
    assert result.exit_code == 2 and "needs 2 to 12 labels" in result.output
    result = cli("lm", "--preset", "huge", "-o", tmp_path / "x.pt")
    assert result.exit_code == 2 and "unknown preset 'huge'" in result.output
    result = cli("lm", "--steps", 0, "-o", tmp_path / "x.pt")
    assert result.exit_code == 2 and "--steps" in result.output
    result = cli("lm", "-o", tmp_path)
    assert result.exit_code == 2 and "is a directory" in result.output
    assert not list(tmp_path.iterdir())


def test_model_options_change_the_task_preset():
    cfg = model_config("classifier", layers=6, d_model=384, heads=12, labels=8)
    assert (cfg.d_model, cfg.num_heads, cfg.kv_heads, len(cfg.encoder_layers), cfg.num_labels) == (384, 12, 4, 6, 8)
    assert all(str(layer) == "full" for layer in cfg.encoder_layers)
    s2s = model_config("seq2seq", layers=3, window=16)
    assert [str(x) for x in s2s.encoder_layers] == [str(x) for x in s2s.decoder_layers] == ["sliding:16"] * 3
    assert model_config("lm").name == "default" and model_config("lm", kv_heads=8).kv_heads == 8

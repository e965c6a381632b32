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


def test_train_with_attention_patterns(tmp_path):
    out = tmp_path / "lm.pt"
    result = cli("lm", *TINY, "--layers", 2, "--attention", "hierarchical:8,sliding:8", "--steps", 3, "--batch", 2,
                 "--seq", 32, "--threads", 1, "-o", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    config = torch.load(out, weights_only=True)["config"]
    assert config["decoder_layers"] == ["hierarchical:8", "sliding:8"] and config["name"] == "default-custom"


def test_bad_attention_patterns(tmp_path):
    result = cli("lm", "--attention", "hierarchical:x", "-o", tmp_path / "x.pt")
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "bad attention pattern 'hierarchical:x': use full, causal, sliding:W, global_local:G:W or hierarchical:B" in (
        result.output)  # fmt: skip
    result = cli("lm", "--layers", 3, "--attention", "full,causal", "-o", tmp_path / "x.pt")
    assert result.exit_code == 2 and "2 attention patterns for the 3 layers of the decoder" in result.output
    result = cli("lm", "--window", 8, "--attention", "full", "-o", tmp_path / "x.pt")
    assert result.exit_code == 2 and "--window and --attention" in result.output
    assert not list(tmp_path.iterdir())


def test_attention_option_sets_each_layer():
    cfg = model_config("lm", layers=3, attention="causal,global_local:2:16,hierarchical:32")
    assert [str(x) for x in cfg.decoder_layers] == ["causal", "global_local:2:16", "hierarchical:32"]
    enc = model_config("classifier", attention="causal")  # a causal layer is causal in an encoder too
    assert all(layer.spec(4, 4, causal=False).causal for layer in enc.encoder_layers)
    assert model_config("lm", attention="full").decoder_layers == model_config("lm", layers=4).decoder_layers


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

"""The command line: each command end to end, and each user error as one line with its exit code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from fastattn.cli import main
from fastattn.runtime.manifest import Manifest

BIN = Path(sys.executable).parent


def cli(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_create_writes_a_loadable_preset(tmp_path):
    result = cli("create", "encoder", "-o", tmp_path / "enc.pt")
    assert result.exit_code == 0, result.output
    assert "encoder preset 'encoder'" in result.output
    assert torch.load(tmp_path / "enc.pt", weights_only=True)["config"]["num_labels"] == 2


def test_create_with_attention_patterns(tmp_path):
    result = cli("create", "default", "-o", tmp_path / "m.pt", "--attention",
                 "sliding:64,sliding:64,hierarchical:64,full")  # fmt: skip
    assert result.exit_code == 0, result.output
    config = torch.load(tmp_path / "m.pt", weights_only=True)["config"]
    assert config["decoder_layers"] == ["sliding:64", "sliding:64", "hierarchical:64", "full"]
    result = cli("create", "seq2seq", "-o", tmp_path / "s.pt", "--attention", "hierarchical:16")  # every layer
    assert result.exit_code == 0, result.output
    config = torch.load(tmp_path / "s.pt", weights_only=True)["config"]
    assert config["encoder_layers"] == config["decoder_layers"] == ["hierarchical:16"] * 2


@pytest.mark.parametrize("patterns, message", [
    ("banded:4", "bad attention pattern 'banded:4'"),
    ("hierarchical:1", "bad attention pattern 'hierarchical:1'"),
    ("sliding", "bad attention pattern 'sliding'"),
    ("global_local:4", "bad attention pattern 'global_local:4'"),
    ("full,,full", "bad attention patterns"),
    ("full,full,full", "3 attention patterns for the 4 layers of the decoder"),
])  # fmt: skip
def test_create_bad_attention_is_one_line_naming_the_forms(tmp_path, patterns, message):
    result = cli("create", "default", "-o", tmp_path / "m.pt", "--attention", patterns)
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1 and message in result.output
    if "layers" not in message:
        assert "full, causal, sliding:W, global_local:G:W or hierarchical:B" in result.output
    assert not (tmp_path / "m.pt").exists()


def test_create_unknown_preset(tmp_path):
    result = cli("create", "huge", "-o", tmp_path / "x.pt")
    assert result.exit_code == 2 and "unknown preset 'huge'" in result.output
    assert not (tmp_path / "x.pt").exists()


def test_fastattn_export_console_script(decoder_checkpoint, tmp_path):
    run = subprocess.run([BIN / "fastattn-export", decoder_checkpoint, "-o", tmp_path / "out"],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "exported" in run.stdout and "validation vs PyTorch" in run.stdout
    assert Manifest.load(tmp_path / "out").validation.passed


def test_validate_and_run(decoder_export, tmp_path):
    ckpt, result = decoder_export
    validated = cli("validate", ckpt, result.output)
    assert validated.exit_code == 0 and "passed 4 cases" in validated.output
    ran = cli("run", result.output, "--input", "input_ids=[[1,2,3,4]]", "--input", "attention_mask=[[1,1,1,1]]",
              "--random", "--save", tmp_path / "o.npz")  # fmt: skip
    assert ran.exit_code == 0, ran.output
    saved = np.load(tmp_path / "o.npz")
    assert saved["logits"].shape == (1, 4, 64) and saved["present_key_1"].shape == (1, 2, 4, 8)


def test_pickled_nn_transformer_exports_with_one_node_per_attention(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Transformer(16, 2, 1, 1, 32, dropout=0.0, batch_first=True).eval()
    torch.save(model, tmp_path / "transformer.pt")
    inputs = ["--input", "src:batch,src_seq,16:float32", "--input", "tgt:batch,tgt_seq,16:float32"]
    refused = cli("export", tmp_path / "transformer.pt", "-o", tmp_path / "out", *inputs)
    assert refused.exit_code == 1
    assert "--allow-pickle" in refused.output and "runs code" in refused.output
    assert not (tmp_path / "out").exists()
    result = cli("export", tmp_path / "transformer.pt", "-o", tmp_path / "out", *inputs, "--allow-pickle")
    assert result.exit_code == 0, result.output
    manifest = Manifest.load(tmp_path / "out")
    assert len(manifest.attention) == 3  # encoder self, decoder self, decoder cross
    assert manifest.validation.passed
    assert "declared 3 attention calls" in (tmp_path / "out" / "report.md").read_text()


@pytest.mark.parametrize(
    "make, args, code, message",
    [
        (None, ["export", "{tmp}/missing.pt"], 2, "missing.pt"),
        (lambda p: p.write_bytes(b"not a model at all"), ["export", "{tmp}/bad.pt"], 1, "bad.pt"),
        (lambda p: p.write_bytes(b""), ["export", "{tmp}/bad.pt"], 1, "empty"),
        (None, ["export", "{ckpt}", "--input", "x:batch:float99"], 2, "dtype 'float99'"),
        (None, ["export", "{ckpt}", "--input", "x:batch:float32", "-o", "{tmp}/o"], 2, "declares its own inputs"),
        (None, ["run", "{tmp}"], 2, "has no fastattn.json"),
        (None, ["run", "{out}", "--input", "input_ids=[[1,2]]", "--input", "attention_mask=[[1,1,1]]", "--random"],
         2, "attention_mask"),
        (None, ["run", "{out}", "--input", "input_ids=[1,2]", "--random"], 2, "rank"),
        (None, ["run", "{out}", "-p", "cuda", "--random"], 1, "CUDAExecutionProvider"),
        (None, ["run", "{out}", "-p", "warp", "--random"], 1, "unknown execution provider"),
        (None, ["export", "{ckpt}", "-o", "{out}"], 2, "holds an earlier export"),
    ],
)  # fmt: skip
def test_user_errors_are_one_line_with_an_exit_code(decoder_export, tmp_path, make, args, code, message):
    ckpt, result = decoder_export
    if make:
        make(tmp_path / "bad.pt")
    args = [a.format(tmp=tmp_path, ckpt=ckpt, out=result.output) for a in args]
    run = CliRunner().invoke(main, args)
    assert run.exit_code == code, run.output
    assert message.lower() in run.output.lower()
    assert "Traceback" not in run.output
    assert run.output.strip().startswith("error:") and run.output.count("\n") == 1


def test_output_is_untouched_by_a_failed_export(decoder_export, tmp_path):
    _, result = decoder_export
    before = json.loads((result.output / "fastattn.json").read_text())
    cli("export", tmp_path / "nope.pt", "-o", result.output, "--force")
    assert json.loads((result.output / "fastattn.json").read_text()) == before


def test_json_results_on_stdout(decoder_export, tmp_path):
    ckpt, result = decoder_export
    exported = subprocess.run([BIN / "fastattn-export", ckpt, "-o", tmp_path / "out", "--json"], capture_output=True,
                              text=True, timeout=600)  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    data = json.loads(exported.stdout)  # stdout holds the document and nothing else
    assert data["manifest"]["validation"]["passed"] and data["output"] == str(tmp_path / "out")
    validated = CliRunner().invoke(main, ["validate", str(ckpt), str(tmp_path / "out"), "--json"])
    assert validated.exit_code == 0 and json.loads(validated.stdout)["passed"]
    ran = CliRunner().invoke(main, ["run", str(result.output), "--random", "--json"])
    assert json.loads(ran.stdout)["logits"]["shape"][-1] == 64


def test_tables_are_whole_when_piped(decoder_export, tmp_path):
    ckpt, _ = decoder_export
    run = subprocess.run([BIN / "fastattn-export", ckpt, "-o", tmp_path / "out"], capture_output=True, text=True,
                         timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "decoder.layers.0.self_attn" in run.stdout and "…" not in run.stdout  # no column cut at 80

"""What is not exported, in one line and a non-zero exit, nothing written; the AttentionInterface fallback;
pickled models: a PreTrainedModel, and a model whose classes live in a training script's __main__ (--code)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from click.testing import CliRunner

import fastattn.runtime as rt
from fastattn.cli import main
from fastattn.errors import InputError
from fastattn.families.hf import architectures


def _export(args: list[str]):
    return CliRunner().invoke(main, ["export", *map(str, args)])


def _one_line(run, exit_code: int, *phrases: str) -> None:
    assert run.exit_code == exit_code, run.output
    lines = [line for line in run.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), run.output
    for phrase in phrases:
        assert phrase in lines[0], lines[0]


def test_unsupported_architectures(hf_checkpoint, tmp_path):
    run = _export([hf_checkpoint("t5"), "-o", tmp_path / "t5"])
    _one_line(run, 1, "model_type 't5' (T5ForConditionalGeneration) is not supported",
              "relative position bias", "Fix: export one of bart, bert")  # fmt: skip
    other = tmp_path / "xlnet"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "xlnet", "architectures": ["XLNetLMHeadModel"]}))
    shutil.copy(hf_checkpoint("llama") / "model.safetensors", other)
    run = _export([other, "-o", tmp_path / "xlnet-out"])
    _one_line(run, 1, "model_type 'xlnet' (XLNetLMHeadModel) is not supported",
              "does not route its attention through transformers' AttentionInterface",
              "supported model types: " + ", ".join(architectures.supported()))  # fmt: skip
    assert not (tmp_path / "t5").exists() and not (tmp_path / "xlnet-out").exists()


def test_damaged_checkpoint_directories(hf_checkpoint, tmp_path):
    source = hf_checkpoint("llama")
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    shutil.copy(source / "config.json", no_weights)
    _one_line(_export([no_weights, "-o", tmp_path / "a"]), 1, "has no weights (model.safetensors")

    corrupt = tmp_path / "corrupt"
    shutil.copytree(source, corrupt)
    (corrupt / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}")
    _one_line(_export([corrupt, "-o", tmp_path / "b"]), 1, "is a damaged safetensors file")

    truncated = tmp_path / "truncated"
    shutil.copytree(source, truncated)
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    _one_line(_export([truncated, "-o", tmp_path / "c"]), 1, "model.safetensors is a damaged safetensors file")

    mismatch = tmp_path / "mismatch"
    shutil.copytree(source, mismatch)
    config = json.loads((mismatch / "config.json").read_text())
    (mismatch / "config.json").write_text(json.dumps({**config, "intermediate_size": 96}))
    _one_line(_export([mismatch, "-o", tmp_path / "d"]), 1, "has shape (128, 64), the config asks for (96, 64)")

    empty = tmp_path / "empty"
    empty.mkdir()
    _one_line(_export([empty, "-o", tmp_path / "f"]), 2, "is a directory without config.json")
    _one_line(_export([hf_checkpoint("llama"), "-o", tmp_path / "e", "--task", "feature-extraction"]), 2,
              "LlamaForCausalLM exports as text-generation, not feature-extraction")  # fmt: skip
    assert not any((tmp_path / n).exists() for n in "abcdef")


def test_attention_interface_fallback(hf_checkpoint, tmp_path):
    """Phi-3 has no family spec; its transformers class runs fastattn's op through AttentionInterface."""
    from fastattn.exporter.pipeline import ExportOptions, export

    result = export(hf_checkpoint("phi3"), ExportOptions(tmp_path / "phi3", repeats=3, threads=1))
    manifest = result.manifest
    assert manifest.arch == "module" and manifest.hf.family == "attention-interface"
    assert [(a.kind, a.num_heads, a.kv_num_heads) for a in manifest.attention] == [("causal", 4, 2)] * 2
    assert manifest.validation.passed and any(c.padded for c in manifest.validation.cases)
    with pytest.raises(InputError, match="cannot generate"):
        rt.load(result.output).generate([5, 6], 2)


SCRIPT = """
    import sys
    import torch
    from torch import nn

    class Transformer(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(50, 16)
            self.encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32, batch_first=True), 2)

        def forward(self, ids):
            return self.encoder(self.embed(ids))

    if __name__ == "__main__":
        torch.manual_seed(0)
        torch.save(Transformer().eval(), sys.argv[1])
        with open(sys.argv[2], "a") as log:
            log.write("ran\\n")
"""


def test_code_resolves_classes_pickled_in_main(tmp_path):
    script, model, log = tmp_path / "train.py", tmp_path / "model.pt", tmp_path / "log.txt"
    script.write_text(textwrap.dedent(SCRIPT))
    subprocess.run([sys.executable, str(script), str(model), str(log)], check=True)
    _one_line(_export([model, "--allow-pickle", "--input", "ids:batch,seq:int64", "-o", tmp_path / "a"]), 1,
              "Can't get attribute 'Transformer'", "--code FILE.py")  # fmt: skip
    _one_line(_export([model, "--code", script, "--input", "ids:batch,seq:int64", "-o", tmp_path / "b"]), 2,
              "--code imports and runs a Python file", "add --allow-pickle")  # fmt: skip
    run = _export([model, "--allow-pickle", "--code", script, "--input", "ids:batch,seq:int64", "-o", tmp_path / "c"])
    assert run.exit_code == 0, run.output
    manifest = rt.load(tmp_path / "c").manifest
    assert len(manifest.attention) == 2 and manifest.validation.passed
    assert manifest.graphs[0].inputs[0].high == 50  # token ids from the model's one embedding table
    assert log.read_text() == "ran\n"  # importing the script did not run its __main__ block


def test_pickled_pretrained_model_takes_the_family_route(hf_checkpoint, tmp_path):
    from fastattn.exporter.pipeline import ExportOptions, export
    from tests.hf import reference

    path = tmp_path / "gpt2.pt"
    torch.save(reference.causal_lm(hf_checkpoint("gpt2")), path)
    result = export(path, ExportOptions(tmp_path / "out", allow_pickle=True, repeats=3, threads=1))
    assert result.manifest.hf.family == "gpt2" and result.manifest.arch == "decoder"
    assert [a.kind for a in result.manifest.attention] == ["causal"] * 2 and result.manifest.validation.passed

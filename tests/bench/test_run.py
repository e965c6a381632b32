"""Where each provider runs, the line for one that is nowhere, and bad input stopped before anything runs."""

from __future__ import annotations

import json
import shutil
import stat
import sys
from pathlib import Path

import pytest

from fastattn.bench import Plan, Settings, Unavailable, bench
from fastattn.bench.plan import ProviderChoice
from fastattn.bench.run import Environment, install_fix, load_exports, locate, pair_torch
from fastattn.errors import InputError

FAST = Settings(threads=1, warmup=0, repeats=2, min_time=0.0, decode_steps=0, pause=0.0, isolate=False)


def fake_python(tmp_path: Path, body: str) -> Path:
    """An executable that stands in for another environment's Python."""
    path = tmp_path / "python"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def test_cpu_runs_in_this_environment():
    env = locate(ProviderChoice.parse("cpu"))
    assert isinstance(env, Environment) and env.python == Path(sys.executable)  # a worker of this Python
    assert env.info["onnxruntime"] and "CPUExecutionProvider" in env.info["available"]
    assert locate(ProviderChoice.parse("cpu"), isolate=False).python is None  # in this process


def test_provider_in_no_environment_is_one_line_with_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.delenv("FASTATTN_CUDA_PYTHON", raising=False)
    monkeypatch.chdir(tmp_path)  # no .venv-cuda here or beside the checkout
    found = locate(ProviderChoice.parse("cuda"))
    assert isinstance(found, Unavailable)
    line = found.line()
    assert line.startswith("cuda: not available: this environment's onnxruntime ") and "\n" not in line
    assert "lacks CUDAExecutionProvider and no .venv-cuda found" in line
    assert "Fix: python -m venv .venv-cuda && .venv-cuda/bin/pip install onnxruntime-gpu numpy" in line


def test_named_python_that_does_not_exist(monkeypatch, tmp_path):
    monkeypatch.setenv("FASTATTN_CUDA_PYTHON", str(tmp_path / "nope" / "python"))
    found = locate(ProviderChoice.parse("cuda"))
    assert isinstance(found, Unavailable) and f"{tmp_path / 'nope' / 'python'} does not exist" in found.reason


def test_environment_whose_onnxruntime_lacks_the_provider(monkeypatch, tmp_path):
    # A stand-in environment that answers the probe like an onnxruntime without OpenVINO EP.
    reply = {
        "ok": True,
        "result": {
            "python": "x",
            "onnxruntime": "1.99.0",
            "numpy": "2",
            "available": ["CPUExecutionProvider"],
        },
    }
    monkeypatch.setenv("FASTATTN_OPENVINO_PYTHON", str(fake_python(tmp_path, f"echo '{json.dumps(reply)}'")))
    found = locate(ProviderChoice.parse("openvino"))
    assert isinstance(found, Unavailable)
    assert "the onnxruntime 1.99.0 of" in found.reason and "has only CPUExecutionProvider" in found.reason
    assert found.fix.startswith("make openvino-env")


def test_environment_that_crashes(monkeypatch, tmp_path):
    monkeypatch.setenv(
        "FASTATTN_OPENVINO_PYTHON", str(fake_python(tmp_path, "echo 'ImportError: boom' >&2; exit 1"))
    )
    found = locate(ProviderChoice.parse("openvino"))
    assert isinstance(found, Unavailable) and found.reason.endswith("failed: ImportError: boom")


def test_install_hints():
    assert "pip install onnxruntime-gpu" in install_fix(ProviderChoice.parse("tensorrt"))
    assert "--use_xnnpack" in install_fix(ProviderChoice.parse("xnnpack"))


def test_unavailable_provider_does_not_stop_the_others(decoder_export, monkeypatch, tmp_path):
    _, exported = decoder_export
    monkeypatch.delenv("FASTATTN_CUDA_PYTHON", raising=False)
    monkeypatch.chdir(tmp_path)
    result = bench(Plan.create([exported.output], ["cuda", "cpu"], sequences=(8,), settings=FAST))
    assert [u.provider for u in result.unavailable] == ["cuda"]
    assert [(r.provider, r.sequence) for r in result.rows] == [("cpu", 8)]
    assert set(result.environments) == {"cpu"}


def test_directory_without_manifest(tmp_path):
    with pytest.raises(InputError, match=r"has no fastattn.json\. Fix: pass the output directory"):
        bench(Plan.create([tmp_path], settings=FAST))


def test_sequence_longer_than_the_positions(decoder_export, tmp_path):
    _, exported = decoder_export
    short = tmp_path / "learned"
    shutil.copytree(exported.output, short)
    manifest = json.loads((short / "fastattn.json").read_text())
    manifest["max_length"] = 32
    (short / "fastattn.json").write_text(json.dumps(manifest))
    plan = Plan.create(
        [short], sequences=(16, 32), settings=Settings(threads=1, decode_steps=4, isolate=False)
    )
    message = (r"sequence length 32 \+ 4 decode steps is longer than learned takes \(32 positions, max_length"
               r".*Fix: pass sequence lengths up to 28 or fewer --decode-steps")  # fmt: skip
    with pytest.raises(InputError, match=message):
        bench(plan)


def test_torch_checkpoint_pairs_with_the_export_of_its_model(decoder_export, seq2seq_export):
    (dec_ckpt, dec), (s2s_ckpt, s2s) = decoder_export, seq2seq_export
    exports = load_exports((s2s.output, dec.output))
    plan = Plan.create([s2s.output, dec.output], torch_models=[dec_ckpt, s2s_ckpt], settings=FAST)
    assert pair_torch(plan, exports) == {dec.output.name: dec_ckpt, s2s.output.name: s2s_ckpt}
    alone = Plan.create([dec.output], torch_models=[s2s_ckpt], settings=FAST)
    with pytest.raises(InputError, match="is not the model of any export given"):
        pair_torch(alone, load_exports((dec.output,)))

"""Issue 13's classes beyond one command line: interpreters from the working directory, names with control
characters, concurrent writers, pinned lowering plans, failures inside ONNX Runtime, NaN sampling."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from fastattn.errors import InputError, RunError
from fastattn.exporter.pipeline import ExportOptions, export
from fastattn.quantize import Mode, QuantOptions
from fastattn.quantize.step import QuantizeStep
from fastattn.runtime import Sampling
from fastattn.runtime.environments import PACKAGE_ROOT, python_for
from fastattn.runtime.manifest import Arch, GraphEntry, Manifest, TensorSpec
from fastattn.runtime.session import ExportedModel

BIN = Path(sys.executable).parent


def test_provider_interpreters_are_never_taken_from_the_working_directory(decoder_export, tmp_path, monkeypatch):
    marker = tmp_path / "ran"
    for provider in ("openvino", "cuda"):
        fake = tmp_path / f".venv-{provider}" / "bin" / "python"
        fake.parent.mkdir(parents=True)
        fake.write_text(f"#!/bin/sh\ntouch {marker}\n")
        fake.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FASTATTN_CUDA_PYTHON", raising=False)
    assert python_for("cuda") is None  # none set up by the project, none named by the user
    assert python_for("openvino") in (None, PACKAGE_ROOT / ".venv-openvino" / "bin" / "python")
    out = decoder_export[1].output
    run = subprocess.run([BIN / "fastattn", "bench", out, "-p", "cuda", "-p", "openvino", "--seq", "8", "--repeats",
                          "1", "--min-time", "0", "--warmup", "0", "--decode-steps", "0"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert "Traceback" not in run.stderr and not marker.exists(), run.stderr


def test_control_characters_in_names_never_reach_the_report_or_the_terminal(decoder_checkpoint, tmp_path):
    odd = tmp_path / "m\x1b[31mred.pt"
    odd.write_bytes(Path(decoder_checkpoint).read_bytes())
    run = subprocess.run([BIN / "fastattn-export", odd, "-o", tmp_path / "out"], capture_output=True, text=True,
                         timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "\x1b[31m" not in run.stdout and "\x1b[31m" not in run.stderr
    report = (tmp_path / "out" / "report.md").read_text()
    assert "\x1b" not in report and "\\x1b[31mred.pt" in report


def test_a_second_export_to_the_same_destination_fails_at_once(decoder_checkpoint, tmp_path):
    first = subprocess.Popen([BIN / "fastattn-export", decoder_checkpoint, "-o", tmp_path / "out"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    lock = tmp_path / ".out.fastattn.lock"
    while not lock.exists() and first.poll() is None:  # the first run holds the destination
        pass
    second = subprocess.run([BIN / "fastattn-export", decoder_checkpoint, "-o", tmp_path / "out", "--force"],
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    first.communicate(timeout=600)
    if first.returncode == 0 and "another fastattn run" not in second.stderr:
        assert second.returncode == 0  # the first had finished before the second started: a plain --force
        return
    assert second.returncode == 2 and "another fastattn run" in second.stderr and second.stderr.count("\n") == 1
    assert first.returncode == 0 and Manifest.load(tmp_path / "out").validation.passed


def test_a_lowering_plan_pins_the_kernels_it_names(decoder_export, decoder_checkpoint, tmp_path):
    first = decoder_export[1]
    plan = json.loads((first.output / "lowering_plan.json").read_text())
    layers = plan["graphs"]["model"]
    assert set(layers) == {a.layer for a in first.manifest.attention}
    for pin in layers.values():  # pin the opposite of what was measured, where another rule applies
        pin["rule"] = "onnx-attention"
        pin.pop("decode", None)
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    again = export(decoder_checkpoint, ExportOptions(tmp_path / "out", lowering_plan=tmp_path / "plan.json"))
    assert [a.lowering for a in again.manifest.attention] == ["onnx-attention"] * len(layers)
    assert all("pinned" in a.rejected["measurement"] for a in again.manifest.attention)
    assert again.validation.passed


def test_kv_buffer_int4_without_held_out_data_gates_on_unpadded_rows(tmp_path):
    from fastattn.models import LayerAttention, ModelConfig, build, save

    cfg = ModelConfig(name="kv", vocab_size=64, d_model=64, num_heads=4, kv_heads=2, ffn_dim=64,
                      decoder_layers=(LayerAttention(),) * 2, max_positions=256)  # fmt: skip
    ckpt = save(build(cfg, seed=1), tmp_path / "kv.pt")
    step = QuantizeStep(QuantOptions(Mode.INT4, block_size=16))
    result = export(ckpt, ExportOptions(tmp_path / "out", kv_buffer=True, quantize=step, repeats=2))
    assert result.manifest.quantization.passed and "unpadded" in result.manifest.quantization.data


def test_nan_sampling_settings_are_refused():
    for bad in (dict(temperature=math.nan), dict(temperature=math.inf), dict(temperature=0.5, top_p=math.nan),
                dict(temperature=-1.0)):  # fmt: skip
        with pytest.raises(InputError, match="temperature|top_p"):
            Sampling(**bad)


def test_onnx_runtime_failures_while_running_are_one_line_naming_the_node(tmp_path):
    """A graph that accepts the manifest's shapes but fails inside ONNX Runtime at some of them."""
    reshape = helper.make_node("Reshape", ["x", "shape"], ["y"], name="fixed_reshape")
    graph = helper.make_graph([reshape], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
                              [helper.make_tensor("shape", TensorProto.INT64, [2], [2, 4])])  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), tmp_path / "model.onnx")
    entry = GraphEntry("model", "model.onnx", [TensorSpec("x", "float32", ("batch", 4))],
                       [TensorSpec("y", "float32", (2, 4))])  # fmt: skip
    model = ExportedModel.from_manifest(tmp_path, Manifest(Arch.MODULE, "test", [entry]))
    assert model.run({"x": np.zeros((2, 4), np.float32)})["y"].shape == (2, 4)
    with pytest.raises(RunError, match=r"graph 'model' at node 'fixed_reshape' \(Reshape\) on x \(3, 4\)") as info:
        model.run({"x": np.zeros((3, 4), np.float32)})
    assert "\n" not in str(info.value) and info.value.exit_code == 1

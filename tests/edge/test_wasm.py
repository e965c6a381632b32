"""The wasm provider and target: onnxruntime-web (pinned, in .venv-web; `make web-env`) driven in Node.

bench rows come through the worker protocol beside the CPU EP's; a -t wasm export is lowered by
timings taken on onnxruntime-web; WebGPU is reported unavailable here (no GPU), not skipped."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fastattn.bench import Plan, Settings, bench
from fastattn.exporter.pipeline import ExportOptions, export
from fastattn.runtime.manifest import Manifest
from fastattn.runtime.web.node import PINNED, find_package, runtime, write_tensors
from fastattn.targets import Target

FAST = Settings(threads=1, warmup=1, repeats=3, min_time=0.0, decode_steps=3, pause=0.0)


@pytest.fixture(scope="module", autouse=True)
def web_env():
    assert find_package() is not None, "onnxruntime-web is not installed: run `make web-env`"
    return runtime()


def test_probe_reports_versions_and_no_webgpu(web_env):
    reply = web_env.call({"op": "probe"})
    assert reply["ok"], reply
    info = reply["result"]
    assert info["onnxruntime_web"] == PINNED == "1.30.0" and info["available"] == ["wasm"]
    assert "navigator.gpu" in info["missing"]["webgpu"]


def test_tensor_files_round_trip(web_env, tmp_path):
    """int64 and float32 arrays reach onnxruntime-web bit for bit (an Identity model echoes them)."""
    import onnx
    from onnx import TensorProto, helper

    arrays = {"a": np.arange(-3, 9, dtype=np.int64).reshape(3, 4), "b": np.random.default_rng(0).standard_normal((2, 5)).astype(np.float32)}
    for name, array in arrays.items():
        dtype = TensorProto.INT64 if array.dtype == np.int64 else TensorProto.FLOAT
        graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                                  [helper.make_tensor_value_info("x", dtype, list(array.shape))],
                                  [helper.make_tensor_value_info("y", dtype, list(array.shape))])  # fmt: skip
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10), str(tmp_path / f"{name}.onnx"))
        [spec] = write_tensors({"x": array}, tmp_path, name)
        reply = web_env.call({"op": "candidates", "provider": "wasm", "threads": 1,
                              "models": {"ref": str(tmp_path / f"{name}.onnx")}, "reference": "ref", "repeats": 1,
                              "rounds": 1, "cases": [{"name": "c", "inputs": [spec]}]})  # fmt: skip
        assert reply["ok"], reply
        assert reply["result"]["cases"][0]["results"]["ref"]["max_abs"] == 0
        assert reply["result"]["cases"][0]["results"]["ref"]["scale"] == float(np.abs(array).max())


def test_bench_wasm_beside_cpu(decoder_export):
    out = decoder_export[1].output
    result = bench(Plan.create([out], ["cpu", "wasm", "webgpu"], sequences=[24], settings=FAST))
    rows = {r.provider: r for r in result.rows}
    assert set(rows) == {"cpu", "wasm"} and not result.failures
    wasm = rows["wasm"]
    assert wasm.engine == "onnxruntime-web 1.30.0" and wasm.session_providers == ["wasm"] and not wasm.iobinding
    assert [p.name for p in wasm.phases] == ["prefill", "decode"] == [p.name for p in rows["cpu"].phases]
    assert len(wasm.phase("prefill").samples_ms) >= 3 and len(wasm.phase("decode").samples_ms) >= 3
    assert wasm.phase("decode").sizes == rows["cpu"].phase("decode").sizes == {"batch": 1, "sequence": 1, "past_sequence": 24}
    assert all(t > 0 for t in wasm.phase("prefill").samples_ms)
    [missing] = result.unavailable
    assert missing.provider == "webgpu" and "WebGPU" in missing.reason
    assert json.loads(json.dumps(result.to_dict()))["rows"][1]["provider"] == "wasm"


def test_export_for_wasm_is_measured_there(decoder_checkpoint, tmp_path):
    result = export(decoder_checkpoint, ExportOptions(tmp_path / "wasm", target=Target.WASM, repeats=2))
    manifest = Manifest.load(result.output)
    assert manifest.target == "wasm" and result.validation.passed
    for layer in manifest.attention:
        assert "measurement" not in layer.rejected  # timed on onnxruntime-web, not a static preference
        assert set(layer.timings) == {"prefill", "decode"}
        prefill = layer.timings["prefill"]
        assert {"portable", "onnx-attention", "mha", "gqa"} <= set(prefill) or "gqa" in layer.rejected
        chosen = layer.lowering.split(" | ")[0]
        assert prefill[chosen] == min(prefill.values())

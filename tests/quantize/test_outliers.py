"""int8 with outlier channels in float (fastattn.quantize.outliers): exact in float, closer to float once quantized."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from fastattn.errors import ValidationFailed
from fastattn.exporter.pipeline import ExportOptions, export
from fastattn.quantize import Mode, QuantOptions, quantize_file
from fastattn.quantize.gates import Gate
from fastattn.quantize.outliers import SUFFIX, channel_absmax, split_outliers
from fastattn.quantize.step import OUTLIER_CHANNELS, QuantizeStep
from fastattn.runtime.manifest import Manifest

K, N = 32, 24
LOUD = (3, 17)  # input channels 30x larger than the rest, as BERT's LayerNorm outputs have
SHAPES = ((1, 1), (2, 5), (3, 17))


def weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"w1": rng.normal(0, 0.2, (K, N)).astype(np.float32), "b1": rng.normal(0, 0.1, N).astype(np.float32),
            "w2": rng.normal(0, 0.2, (K, N)).astype(np.float32)}  # fmt: skip


def two_linears(path) -> dict[str, np.ndarray]:
    """y1 = Relu(x @ w1 + b1) and y2 = x @ w2 (a graph output straight from the MatMul), sharing x."""
    w = weights()
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["m1"], name="mm1"),
             helper.make_node("Add", ["m1", "b1"], ["a1"], name="bias1"),
             helper.make_node("Relu", ["a1"], ["y1"], name="relu"),
             helper.make_node("MatMul", ["x", "w2"], ["y2"], name="mm2")]  # fmt: skip
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "sequence", K])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", "sequence", N]) for n in ("y1", "y2")],
        [numpy_helper.from_array(v, k) for k, v in w.items()])  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return w


def sample(batch: int, sequence: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(0, 1, (batch, sequence, K)).astype(np.float32)
    x[..., list(LOUD)] *= 30
    return x


def reference(w: dict[str, np.ndarray], x: np.ndarray) -> dict[str, np.ndarray]:
    x64 = x.astype(np.float64)
    return {"y1": np.maximum(x64 @ w["w1"] + w["b1"], 0), "y2": x64 @ w["w2"]}


def run(path, x: np.ndarray) -> dict[str, np.ndarray]:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return dict(zip(["y1", "y2"], session.run(["y1", "y2"], {"x": x}), strict=True))


def calibration() -> list[dict[str, np.ndarray]]:
    return [{"x": sample(2, 8, seed)} for seed in (100, 101)]


def test_split_is_exact_in_float_and_shares_the_mask(tmp_path):
    w = two_linears(tmp_path / "float.onnx")
    model = ir.load(tmp_path / "float.onnx")
    absmax = channel_absmax(model, ["x"], calibration())
    assert set(np.argsort(absmax["x"])[-2:]) == set(LOUD)
    assert [o.name for o in model.graph.outputs] == ["y1", "y2"]  # the probe's extra outputs are gone
    splits = split_outliers(model, ["mm1", "mm2"], absmax, 2)
    assert [(s.node, s.channels) for s in splits] == [("mm1", LOUD), ("mm2", LOUD)]
    assert splits[0].share > 10
    ops = Counter(n.op_type for n in model.graph)
    assert ops["Mul"] == 1 and ops["Gather"] == 1 and ops["MatMul"] == 4  # one mask for both sites
    # mm1's float part is added after its bias Add, which stays right behind the MatMul
    assert next(n for n in model.graph if n.name == "bias1").inputs[0].producer().name == "mm1"
    ir.save(model, tmp_path / "split.onnx")
    for batch, sequence in SHAPES:
        x = sample(batch, sequence, seed=batch * 7 + sequence)
        want = reference(w, x)
        got = run(tmp_path / "split.onnx", x)
        for name in ("y1", "y2"):
            np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-4)


def test_int8_with_outlier_channels_is_closer_to_float(tmp_path):
    w = two_linears(tmp_path / "float.onnx")
    plain = quantize_file(tmp_path / "float.onnx", tmp_path / "plain.onnx", QuantOptions(Mode.INT8, outlier_channels=0))
    split = quantize_file(tmp_path / "float.onnx", tmp_path / "split.onnx", QuantOptions(Mode.INT8, outlier_channels=2),
                          calibration())  # fmt: skip
    assert len(plain.quantized) == len(split.quantized) == 2
    assert split.ops["MatMulInteger"] == 2 and split.ops["MatMul"] == 2  # the float side products stay float
    assert split.settings["outliers"]["weights"] == 2 and split.settings["outliers"]["channels_per_weight"] == 2
    saved = onnx.load(tmp_path / "split.onnx")
    assert {n.name for n in saved.graph.node if n.op_type == "MatMul"} == {"mm1" + SUFFIX, "mm2" + SUFFIX}
    for batch, sequence in SHAPES:
        x = sample(batch, sequence, seed=batch + 13 * sequence)
        want = reference(w, x)
        for name in ("y1", "y2"):
            scale = np.abs(want[name]).max()
            err_plain = np.abs(run(tmp_path / "plain.onnx", x)[name] - want[name]).max() / scale
            err_split = np.abs(run(tmp_path / "split.onnx", x)[name] - want[name]).max() / scale
            assert err_split < 0.01 and err_split < err_plain / 4, (batch, sequence, name, err_plain, err_split)


def test_outlier_channels_need_calibration(tmp_path):
    two_linears(tmp_path / "float.onnx")
    with pytest.raises(ValueError, match="calibration"):
        quantize_file(tmp_path / "float.onnx", tmp_path / "q.onnx", QuantOptions(Mode.INT8, outlier_channels=2))


def test_step_tries_outlier_channels_before_the_search(decoder_checkpoint, tmp_path):
    impossible = Gate(max_ppl_increase=-0.5, min_cosine=2.0, max_accuracy_drop=0.0)
    step = QuantizeStep(QuantOptions(Mode.INT8), gate=impossible, budget=0.0)
    with pytest.raises(ValidationFailed):
        export(decoder_checkpoint, ExportOptions(tmp_path / "out", quantize=step))
    q = Manifest.load(tmp_path / "out.rejected").quantization
    assert [a.outlier_channels for a in q.attempts] == [0, OUTLIER_CHANNELS]
    assert q.settings["outliers"]["channels_per_weight"] == OUTLIER_CHANNELS
    # asked for none: no second tier
    fixed = QuantizeStep(QuantOptions(Mode.INT8, outlier_channels=0), gate=impossible, budget=0.0)
    with pytest.raises(ValidationFailed):
        export(decoder_checkpoint, ExportOptions(tmp_path / "out2", quantize=fixed))
    q = Manifest.load(tmp_path / "out2.rejected").quantization
    assert [a.outlier_channels for a in q.attempts] == [0] and "outliers" not in q.settings

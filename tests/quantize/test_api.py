"""quantize_file as a whole: writes atomically, leaves the source alone, external data, Gemm, providers."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from fastattn.errors import InputError
from fastattn.exporter.pipeline import ExportOptions, export
from fastattn.quantize import Mode, QuantOptions, api, quantize_file, sample_batches, weight_sites
from fastattn.runtime.manifest import Manifest
from fastattn.targets import Target
from tests.quantize.conftest import SHAPES, cosine, op_counts, run


def test_source_directory_untouched_and_dst_replaced(exports, tmp_path):
    export = exports["cpu"]
    before = sorted(p.name for p in export.directory.iterdir())
    dst = tmp_path / "out" / "model.onnx"
    dst.parent.mkdir()
    dst.write_text("old")
    result = quantize_file(export.model, dst, QuantOptions(Mode.INT8))
    assert sorted(p.name for p in export.directory.iterdir()) == before  # no "-inferred" copies beside src
    assert sorted(p.name for p in dst.parent.iterdir()) == ["model.onnx"]  # no work directory left
    assert result.size_after == dst.stat().st_size and op_counts(dst)["MatMulInteger"] == len(
        result.quantized
    )


def test_failure_leaves_dst_as_it_was(exports, tmp_path, monkeypatch):
    dst = tmp_path / "model.onnx"
    dst.write_text("old")

    def broken(path):
        raise RuntimeError("simulated")

    monkeypatch.setattr(api, "_check_loads", broken)
    with pytest.raises(RuntimeError, match="simulated"):
        quantize_file(exports["cpu"].model, dst, QuantOptions(Mode.INT4))
    assert dst.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_bad_paths_are_input_errors(exports, tmp_path):
    with pytest.raises(InputError, match=r"does not exist\. Fix: pass the \.onnx file"):
        quantize_file(tmp_path / "none.onnx", tmp_path / "q.onnx", QuantOptions(Mode.INT8))
    with pytest.raises(InputError, match="is the model being quantized"):
        quantize_file(exports["cpu"].model, exports["cpu"].model, QuantOptions(Mode.INT8))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"block_size": 24}, "not a power of two"),
        ({"accuracy_level": 5}, "not one of 0-4"),
        ({"calibration_batches": 0}, "use at least 1"),
        ({"target": "tpu"}, "unknown target .tpu.*use one of portable, cpu, openvino, cuda"),
    ],
)
def test_bad_options_are_input_errors(kwargs, match):
    with pytest.raises(InputError, match=match):
        QuantOptions(Mode.INT4, **kwargs)
    assert QuantOptions("int4").mode is Mode.INT4  # strings from the CLI are accepted


@pytest.mark.parametrize("mode", [Mode.INT8, Mode.INT4, Mode.FP16], ids=lambda m: m.value)
def test_external_data_in_and_out(exports, tmp_path, monkeypatch, mode):
    """Large models keep their weights in ``<file>.data`` (threshold lowered to make the tiny one 'large')."""
    export = exports["portable"]
    src = tmp_path / "src" / "model.onnx"
    src.parent.mkdir()
    ir.save(ir.load(export.model), src, external_data="model.onnx.data", size_threshold_bytes=0)
    monkeypatch.setattr(api, "EXTERNAL_DATA_THRESHOLD", 0)
    dst = tmp_path / "out" / "model.onnx"
    result = quantize_file(src, dst, QuantOptions(mode))
    assert sorted(p.name for p in dst.parent.iterdir()) == ["model.onnx", "model.onnx.data"]
    stored = onnx.load(dst, load_external_data=False)
    assert any(t.data_location == TensorProto.EXTERNAL for t in stored.graph.initializer)
    assert result.size_after == dst.stat().st_size + (dst.parent / "model.onnx.data").stat().st_size
    assert result.size_before == src.stat().st_size + (src.parent / "model.onnx.data").stat().st_size
    reference, outputs = (
        run(export.model, export.graph, SHAPES["prefill"]),
        run(dst, export.graph, SHAPES["prefill"]),
    )
    assert cosine(outputs["logits"], reference["logits"]) > 0.99
    monkeypatch.setattr(
        api, "EXTERNAL_DATA_THRESHOLD", 1 << 30
    )  # a small model over a large one: stale data goes
    quantize_file(src, dst, QuantOptions(mode))
    assert sorted(p.name for p in dst.parent.iterdir()) == ["model.onnx"]


@pytest.fixture(scope="module")
def gemm_model(tmp_path_factory):
    """x -> Gemm(W1) -> MatMul(W2) -> y, plus an activation product y·yᵀ: two weight sites."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((16, 32)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(rng.standard_normal(32).astype(np.float32), "b1")
    w2 = numpy_helper.from_array(rng.standard_normal((32, 8)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "w2"], ["y"], name="fc2"),
        helper.make_node("Transpose", ["y"], ["yt"], name="t"),
        helper.make_node("MatMul", ["y", "yt"], ["gram"], name="gram"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("gram", TensorProto.FLOAT, ["batch", "batch"])],
        [w1, b1, w2],
    )
    path = tmp_path_factory.mktemp("gemm") / "gemm.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.parametrize(
    "mode, kept",
    [
        (Mode.INT8, {"fc1": "Gemm: the dynamic path has no integer Gemm kernel"}),
        (Mode.INT8_STATIC, {}),
        (Mode.INT4, {"fc1": "Gemm: MatMulNBitsQuantizer takes MatMul only"}),
    ],
)
def test_gemm_sites(gemm_model, tmp_path, mode, kept):
    sites = weight_sites(gemm_model)
    assert [(s.node, s.op_type, s.shape) for s in sites] == [
        ("fc1", "Gemm", (16, 32)),
        ("fc2", "MatMul", (32, 8)),
    ]
    feeds = ({"x": np.random.default_rng(i).standard_normal((4, 16)).astype(np.float32)} for i in range(4))
    result = quantize_file(gemm_model, tmp_path / "q.onnx", QuantOptions(mode), feeds)
    assert {s.node: r for s, r in result.kept} == kept
    assert {s.node for s in result.quantized} == {"fc1", "fc2"} - set(kept)
    model = onnx.load(tmp_path / "q.onnx")
    gram = next(n for n in model.graph.node if n.name == "gram")
    assert gram.op_type == "MatMul" and list(gram.input) == ["y", "yt"]
    x = np.random.default_rng(9).standard_normal((3, 16)).astype(np.float32)
    ref = ort.InferenceSession(str(gemm_model), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    out = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"x": x}
    )[0]
    assert cosine(out, ref) > 0.99


def test_int4_per_provider(exports, tmp_path):
    export = exports["openvino"]
    n = len(weight_sites(export.model))
    qdq = quantize_file(export.model, tmp_path / "ov.onnx", QuantOptions(Mode.INT4, target=Target.OPENVINO))
    ops = op_counts(tmp_path / "ov.onnx")
    assert ops["MatMulNBits"] == 0 and ops["DequantizeLinear"] == n and qdq.settings["accuracy_level"] is None
    model = onnx.load(tmp_path / "ov.onnx")
    assert {i.data_type for i in model.graph.initializer if i.name.endswith("_DQ_Q4")} == {TensorProto.INT4}
    assert not any(o.domain == "com.microsoft" for o in model.opset_import)  # OpenVINO EP runs no contrib ops
    reference, outputs = (
        run(export.model, export.graph, SHAPES["long"]),
        run(tmp_path / "ov.onnx", export.graph, SHAPES["long"]),
    )
    assert cosine(outputs["logits"], reference["logits"]) > 0.99
    cuda = quantize_file(
        export.model, tmp_path / "cuda.onnx", QuantOptions(Mode.INT4, target=Target.CUDA, block_size=16)
    )
    assert cuda.settings["accuracy_level"] == 0 and cuda.settings["block_size"] == 16
    nodes = [n for n in onnx.load(tmp_path / "cuda.onnx").graph.node if n.op_type == "MatMulNBits"]
    assert len(nodes) == n and all("accuracy_level" not in [a.name for a in n.attribute] for n in nodes)
    given = quantize_file(export.model, tmp_path / "l1.onnx", QuantOptions(Mode.INT4, accuracy_level=1))
    assert given.settings["accuracy_level"] == 1 and given.settings["accuracy_level_reason"] == "given"


def test_fp16_of_a_cuda_export(decoder_checkpoint, tmp_path):
    """A cuda export: If(guard, GroupQueryAttention, fastattn call). The branches are converted (GQA in
    fp16, as CUDA wants); the result still loads and runs on the CPU EP, close to float."""
    out = export(decoder_checkpoint, ExportOptions(tmp_path / "cuda", target=Target.CUDA, repeats=1)).output
    graph = Manifest.load(out).graph()
    result = quantize_file(out / graph.file, tmp_path / "fp16.onnx", QuantOptions(Mode.FP16, target=Target.CUDA))
    assert "note" not in result.settings  # meant for cuda
    model = onnx.load(tmp_path / "fp16.onnx")
    gqa = [
        n
        for g in model.graph.node
        if g.op_type == "If"
        for a in g.attribute
        for n in a.g.node
        if n.op_type == "GroupQueryAttention"
    ]
    assert len(gqa) == 2
    for name, sizes in SHAPES.items():
        reference, outputs = run(out / graph.file, graph, sizes), run(tmp_path / "fp16.onnx", graph, sizes)
        assert all(cosine(outputs[k], reference[k]) > 0.9999 for k in reference), name


def test_seq2seq_graphs(seq2seq_export, tmp_path):
    """Encoder and decoder graphs (cross attention, encoder_hidden_states input), static and int4."""
    _, result = seq2seq_export
    manifest = Manifest.load(result.output)
    sizes = {"batch": 1, "sequence": 6, "encoder_sequence": 10}
    for graph in manifest.graphs:
        src = result.output / graph.file
        for mode in (Mode.INT8_STATIC, Mode.INT4):
            dst = tmp_path / f"{graph.name}-{mode.value}.onnx"
            q = quantize_file(src, dst, QuantOptions(mode), sample_batches(graph, sizes, 2))
            assert len(q.quantized) == len(weight_sites(src)) > 0
            full = {**sizes, "past_sequence": 2}
            reference, outputs = run(src, graph, full), run(dst, graph, full)
            assert all(cosine(outputs[k], reference[k]) > 0.99 for k in reference), (graph.name, mode)


@pytest.mark.parametrize("mode", [Mode.INT8, Mode.INT8_STATIC, Mode.INT4], ids=lambda m: m.value)
def test_asymmetric_weights(exports, tmp_path, mode):
    export = exports["portable"]
    batches = sample_batches(export.graph, {"batch": 1, "sequence": 12}, 2)
    result = quantize_file(export.model, tmp_path / "q.onnx", QuantOptions(mode, symmetric=False), batches)
    assert result.settings["symmetric"] is False
    if mode is Mode.INT4:  # a zero point per block: MatMulNBits' fourth input
        nodes = [n for n in onnx.load(tmp_path / "q.onnx").graph.node if n.op_type == "MatMulNBits"]
        assert nodes and all(len(n.input) == 4 for n in nodes)
    reference, outputs = (
        run(export.model, export.graph, SHAPES["long"]),
        run(tmp_path / "q.onnx", export.graph, SHAPES["long"]),
    )
    assert cosine(outputs["logits"], reference["logits"]) > 0.99

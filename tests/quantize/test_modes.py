"""Each mode on each target's export: loads and runs on CPU EP, has the expected ops, touches only weight
sites, and stays close to the float model at two shapes (one longer than the attention window)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from fastattn.quantize import Mode, QuantOptions, quantize_file, sample_batches, weight_sites
from fastattn.quantize.sites import protected_nodes
from tests.quantize.conftest import SHAPES, cosine, op_counts, run

# Lowest cosine of any output (logits and present key/values) to the float model, measured on the
# random-weight tiny decoder: int8 0.99997, int8-static 0.99983, int4 0.9963 (block 32), fp16 1.0.
MIN_COSINE = {Mode.INT8: 0.9995, Mode.INT8_STATIC: 0.999, Mode.INT4: 0.99, Mode.FP16: 0.99999}
TARGETS = ("cpu", "portable", "openvino")


def matmuls_with_initializer_b(model: onnx.ModelProto) -> list[str]:
    """Weight MatMuls counted independently of fastattn.quantize.sites."""
    inits = {i.name for i in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type in ("MatMul", "Gemm") and n.input[1] in inits]


@pytest.fixture(scope="module")
def quantized(exports, tmp_path_factory):
    """(target, mode) -> (QuantResult, path), made once."""
    root = tmp_path_factory.mktemp("modes")
    made = {}
    for target in TARGETS:
        export = exports[target]
        for mode in Mode:
            dst = root / f"{target}-{mode.value}.onnx"
            batches = sample_batches(export.graph, {"batch": 1, "sequence": 16}, 4)
            made[target, mode] = quantize_file(export.model, dst, QuantOptions(mode), batches), dst
    return made


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("mode", list(Mode), ids=lambda m: m.value)
def test_output_runs_close_to_float(exports, quantized, target, mode):
    export = exports[target]
    _, path = quantized[target, mode]
    for name, sizes in SHAPES.items():
        reference, outputs = run(export.model, export.graph, sizes), run(path, export.graph, sizes)
        assert outputs.keys() == reference.keys()
        for out, ref in reference.items():
            assert outputs[out].dtype == ref.dtype and outputs[out].shape == ref.shape
            assert cosine(outputs[out], ref) >= MIN_COSINE[mode], (name, out)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("mode", list(Mode), ids=lambda m: m.value)
def test_only_weight_sites_change(exports, quantized, target, mode):
    export = exports[target]
    result, path = quantized[target, mode]
    source = onnx.load(export.model)
    weights = matmuls_with_initializer_b(source)
    assert sorted(s.node for s in weight_sites(export.model)) == sorted(weights) and weights
    assert sorted(s.node for s in result.quantized) == sorted(weights) and result.kept == []
    ops, before = op_counts(path), op_counts(export.model)
    n = len(weights)
    if mode is Mode.INT8:
        assert ops["MatMulInteger"] == n and ops["DynamicQuantizeLinear"] >= 1
        assert ops["MatMul"] == before["MatMul"] - n
    elif mode is Mode.INT8_STATIC:
        assert ops["MatMul"] == before["MatMul"] and ops["MatMulInteger"] == 0
        model = onnx.load(path)
        producers = {o: node.op_type for node in model.graph.node for o in node.output}
        sites = [node for node in model.graph.node if node.name in weights]
        assert len(sites) == n and all(producers.get(i) == "DequantizeLinear" for s in sites for i in s.input)
        assert ops["QuantizeLinear"] >= 1
    elif mode is Mode.INT4:
        assert ops["MatMulNBits"] == n and ops["MatMul"] == before["MatMul"] - n
        assert (
            result.settings["accuracy_level"] == 4
            and "int8 compute" in result.settings["accuracy_level_reason"]
        )
    else:
        model = onnx.load(path)
        dtypes = {i.name: i.data_type for i in model.graph.initializer}
        assert all(dtypes.get(s.weight) == onnx.TensorProto.FLOAT16 for s in result.quantized)
        assert [i.type.tensor_type.elem_type for i in model.graph.input] == [
            i.type.tensor_type.elem_type for i in source.graph.input
        ]  # keep_io_types
    assert result.ops == dict(ops)
    assert (
        0 < result.size_after < result.size_before
        or mode is Mode.FP16
        and result.size_after < result.size_before
    )


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("mode", list(Mode), ids=lambda m: m.value)
def test_attention_and_activation_matmuls_untouched(exports, quantized, target, mode):
    export = exports[target]
    result, path = quantized[target, mode]
    before, after = protected_nodes(export.model), protected_nodes(path)
    kinds = {v[1] for v in before.values()}
    expected = {"cpu": {"If"}, "portable": {"Attention"}, "openvino": {"MatMul"}}[target]
    assert expected <= kinds, kinds
    # a QDQ site's weight now comes from a DequantizeLinear: it counts as an activation MatMul after
    assert set(after) - set(before) <= {s.node for s in result.quantized} and set(before) <= set(after)
    for name, (domain, op_type, inputs) in before.items():
        assert after[name][:2] == (domain, op_type)
        if mode is not Mode.FP16:
            assert after[name][2] == inputs, name
    source, output = onnx.load(export.model), onnx.load(path)
    assert [f.name for f in source.functions] == [f.name for f in output.functions]
    if mode is not Mode.FP16:  # If branches (attention kernels) keep their nodes (value_info may be added)

        def branches(model):
            return {
                (n.name, a.name): [(b.domain, b.op_type, list(b.input), list(b.output)) for b in a.g.node]
                for n in model.graph.node
                if n.op_type == "If"
                for a in n.attribute
            }

        assert branches(output) == branches(source)


def test_openvino_activation_matmuls_stay_float(exports, quantized):
    """Q·Kᵀ and P·V of the inlined attention bodies get no Q/DQ around them in any integer mode."""
    export = exports["openvino"]
    activation = [n for n, v in protected_nodes(export.model).items() if v[1] == "MatMul"]
    assert len(activation) == 4  # two layers, two products each
    for mode in (Mode.INT8, Mode.INT8_STATIC, Mode.INT4):
        model = onnx.load(quantized["openvino", mode][1])
        producers = {o: n.op_type for n in model.graph.node for o in n.output}
        for node in model.graph.node:
            if node.name in activation:
                assert node.op_type == "MatMul"
                assert not {producers.get(i) for i in node.input} & {
                    "DequantizeLinear",
                    "DynamicQuantizeLinear",
                }


def test_int8_static_uses_uint8_activations_int8_per_channel_weights(exports, quantized):
    result, path = quantized["portable", Mode.INT8_STATIC]
    model = onnx.load(path)
    inits = {i.name: i for i in model.graph.initializer}
    weights = {s.weight for s in result.quantized}
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        data, scale = node.input[0], inits.get(node.input[1])
        if data.removesuffix("_quantized") in weights:
            assert (
                inits[data].data_type == onnx.TensorProto.INT8 and len(scale.dims) == 1
            )  # per output channel
        elif data in inits:
            continue
        else:
            zero_point = inits[node.input[2]]
            assert zero_point.data_type == onnx.TensorProto.UINT8
    assert result.settings["per_channel"] and result.settings["calibration_batches"] == 4
    assert result.settings["reduce_range"] is False or "lacks VNNI" in result.settings["reduce_range_reason"]


def test_decode_steps_agree_with_float(exports, quantized):
    """Three greedy decode steps through the KV cache pick the same tokens as the float model (int8)."""
    export = exports["cpu"]
    _, path = quantized["cpu", Mode.INT8]
    import onnxruntime as ort  # noqa: PLC0415

    sessions = [
        ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (export.model, path)
    ]
    picks = []
    for session in sessions:
        feeds = {
            s.name: np.zeros(s.concrete_shape({"batch": 1, "sequence": 1, "past_sequence": 0}), np.dtype(s.dtype))
            for s in export.graph.inputs
        }
        ids = np.array([[3, 5, 7, 11]], dtype=np.int64)
        tokens, past = [], 0
        for _ in range(3):
            feeds = {**feeds, "input_ids": ids, "attention_mask": np.ones((1, past + ids.shape[1]), np.int64)}
            past += ids.shape[1]
            outs = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds), strict=True))
            ids = outs["logits"][:, -1:].argmax(-1).astype(np.int64)
            tokens.append(int(ids[0, 0]))
            feeds.update({c.past: outs[c.present] for c in export.graph.cache})
        picks.append(tokens)
    assert picks[0] == picks[1]

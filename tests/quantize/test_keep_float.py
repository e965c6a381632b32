"""keep_float: by node name, weight name or module-path prefix; a name that matches nothing is refused."""

from __future__ import annotations

import onnx
import pytest

from fastattn.errors import InputError
from fastattn.quantize import Mode, QuantOptions, quantize_file, weight_sites
from fastattn.quantize.sites import match_keep_float
from tests.quantize.conftest import SHAPES, cosine, op_counts, run


def test_sites_carry_module_paths(exports):
    sites = weight_sites(exports["portable"].model)
    modules = [s.module for s in sites]
    assert "decoder.layers.0.self_attn.q_proj" in modules and modules[-1] == "lm_head"
    assert all(len(s.shape) == 2 and s.op_type == "MatMul" for s in sites)
    lm_head = sites[-1]
    assert lm_head.shape == (32, 64)  # d_model x vocab


def test_match_by_node_weight_and_prefix(exports):
    sites = weight_sites(exports["portable"].model)
    first, last = sites[0], sites[-1]
    matched, unmatched = match_keep_float(sites, [first.node, last.weight, "decoder.layers.1", "nope"])
    layer1 = [s.node for s in sites if s.module.startswith("decoder.layers.1.")]
    assert len(layer1) == 6  # q, k, v, o, fc1, fc2
    assert set(matched) == {first.node, last.node, *layer1} and unmatched == ["nope"]
    # a prefix matches whole path segments only: "decoder.layers.1" is not "decoder.layers.10"
    assert not match_keep_float(sites, ["decoder.layers.0.self_attn.q"])[0]


@pytest.mark.parametrize("mode", [Mode.INT8, Mode.INT4, Mode.FP16], ids=lambda m: m.value)
def test_kept_weights_stay_float(exports, tmp_path, mode):
    export = exports["portable"]
    sites = weight_sites(export.model)
    result = quantize_file(
        export.model, tmp_path / "q.onnx", QuantOptions(mode, keep_float=("decoder.layers.0", "lm_head"))
    )
    kept = {s.node for s, _ in result.kept}
    assert kept == {
        s.node for s in sites if s.module.startswith("decoder.layers.0.") or s.module == "lm_head"
    }
    assert len(kept) == 7 and len(result.quantized) == len(sites) - 7
    assert all(reason.startswith("keep_float: ") for _, reason in result.kept)
    model = onnx.load(tmp_path / "q.onnx")
    dtypes = {i.name: i.data_type for i in model.graph.initializer}
    nodes = {n.name: n for n in model.graph.node}
    for site, _ in result.kept:
        assert nodes[site.node].op_type == "MatMul" and dtypes[site.weight] == onnx.TensorProto.FLOAT
    ops = op_counts(tmp_path / "q.onnx")
    if mode is Mode.INT8:
        assert ops["MatMulInteger"] == len(result.quantized)
    if mode is Mode.INT4:
        assert ops["MatMulNBits"] == len(result.quantized)
    reference, outputs = (
        run(export.model, export.graph, SHAPES["long"]),
        run(tmp_path / "q.onnx", export.graph, SHAPES["long"]),
    )
    assert cosine(outputs["logits"], reference["logits"]) > 0.99


def test_keep_everything_copies_the_model(exports, tmp_path):
    export = exports["cpu"]
    names = tuple(s.node for s in weight_sites(export.model))
    result = quantize_file(export.model, tmp_path / "q.onnx", QuantOptions(Mode.INT4, keep_float=names))
    assert result.quantized == [] and len(result.kept) == len(names)
    assert op_counts(tmp_path / "q.onnx") == op_counts(export.model)
    assert "unchanged" in result.settings["note"]


def test_unknown_keep_float_name_is_an_input_error(exports, tmp_path):
    export = exports["cpu"]
    with pytest.raises(InputError) as info:
        quantize_file(
            export.model,
            tmp_path / "q.onnx",
            QuantOptions(Mode.INT8, keep_float=("lm_head", "decoder.layer.0")),
        )
    message = str(info.value)
    assert "\n" not in message and "'decoder.layer.0'" in message and "Fix: name a node" in message
    assert "lm_head'" not in message.split(". Fix")[0]  # only the unmatched entry is named
    assert not any(tmp_path.iterdir())  # nothing written

import numpy as np
import pytest

from fastattn.exporter.fusion.registry import by_name
from tests.fusion.models import assert_same_outputs, exported, fused, op_count


def _matmul_inputs(model):
    """How many MatMuls with a constant weight read each value."""
    counts = {}
    for node in model.graph:
        if node.op_type == "MatMul" and node.inputs[1].const_value is not None:
            counts[node.inputs[0].name] = counts.get(node.inputs[0].name, 0) + 1
    return counts


@pytest.mark.parametrize("name", ["enc_ln_pre", "dec_rms_pre_gqa"])
def test_packs_q_k_v_into_one_matmul(name):
    export = exported(name)
    before = export.model()
    model, report = fused(export, False, ["packed_qkv"])
    assert report.counts["packed_qkv"] == report.rewrites["packed_qkv"] == export.expected["packed_qkv"] == 2
    assert op_count(model, "MatMul") == op_count(before, "MatMul") - 4
    assert op_count(model, "Split") == 2
    packed = [v for v in model.graph.initializers.values() if v.name.endswith("qkv_weight")]
    widths = sorted(v.const_value.shape[1] for v in packed)
    assert widths == [64, 64] if name == "dec_rms_pre_gqa" else [96, 96]  # GQA: 32 + 16 + 16
    biases = [v for v in model.graph.initializers.values() if v.name.endswith("qkv_bias")]
    assert len(biases) == 2 and all(b.const_value.numpy().ndim == 1 for b in biases)
    assert_same_outputs(export, model)


def test_swiglu_gate_and_up_stay_apart():
    export = exported("dec_rms_pre_gqa")
    model, report = fused(export, False, ["packed_qkv"])
    assert sorted(_matmul_inputs(model).values()).count(2) == 2  # each FFN's gate and up


def test_cross_attention_keys_and_values_stay_apart():
    """The seq2seq encoder output feeds both decoder layers' cross k/v projections: 4, not a q/k/v triple."""
    export = exported("seq2seq", "encoder")
    model, report = fused(export, False, ["packed_qkv"], allow_shortfall=True)
    assert report.counts["packed_qkv"] == export.expected["packed_qkv"] == 2
    assert 4 in _matmul_inputs(model).values()
    why = by_name("packed_qkv").explain(model, False)
    assert "feeds 4 MatMuls with constant weights, not the 3 of q, k, v" in why
    assert_same_outputs(export, model)


def test_nothing_left_to_pack_says_so():
    export = exported("enc_ln_pre")
    model, _ = fused(export, False, ["packed_qkv"])
    why = by_name("packed_qkv").explain(model, False)
    assert why == "no value is the input of two or more MatMuls with constant weights"
    assert np.isfinite(assert_same_outputs(export, model))

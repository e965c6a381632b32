import pytest

from tests.fusion.models import assert_same_outputs, exported, fused, op_count


@pytest.mark.parametrize("name", ["dec_rms_pre_gqa", "enc_rms_post"])
def test_fuses_every_rms_norm(name, contrib):
    export = exported(name)
    model, report = fused(export, contrib, ["rms_norm"])
    assert report.counts["rms_norm"] == export.expected["rms_norm"] == (5 if name == "dec_rms_pre_gqa" else 4)
    fused_op = "SimplifiedLayerNormalization" if contrib else "RMSNormalization"
    assert op_count(model, fused_op) == report.counts["rms_norm"]
    assert op_count(model, "ReduceMean") == op_count(model, "Reciprocal") == 0
    assert report.opset == (20 if contrib else 23)  # ONNX RMSNormalization is opset 23
    assert_same_outputs(export, model)


def test_none_in_a_layer_norm_model(contrib):
    export = exported("enc_ln_pre")
    model, report = fused(export, contrib, ["rms_norm"])
    assert report.counts["rms_norm"] == export.expected["rms_norm"] == 0
    assert report.opset == 20  # raised for the standard rule, put back when it fused nothing
    assert op_count(model, "LayerNormalization") == 5

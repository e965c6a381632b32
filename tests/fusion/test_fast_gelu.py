from tests.fusion.models import assert_same_outputs, exported, fused, op_count

MS = "com.microsoft"


def test_fuses_the_spelled_out_tanh_form(contrib):
    export = exported("enc_gelu_opset18")
    model, report = fused(export, contrib, ["fast_gelu"])
    assert report.counts["fast_gelu"] == report.rewrites["fast_gelu"] == export.expected["fast_gelu"] == 1
    assert op_count(model, "Tanh") == 0
    if contrib:
        assert op_count(model, "FastGelu", MS) == 1
    else:
        gelus = [n for n in model.graph if n.op_type == "Gelu"]
        assert [n.attributes.get_string("approximate") for n in gelus] == ["tanh"]
        assert report.opset == 20
    assert_same_outputs(export, model)


def test_onnx_tanh_gelu_becomes_fast_gelu():
    export = exported("enc_gelu_tanh")
    model, report = fused(export, True, ["fast_gelu"])
    assert report.counts["fast_gelu"] == report.rewrites["fast_gelu"] == export.expected["fast_gelu"] == 1
    assert op_count(model, "FastGelu", MS) == 1
    assert op_count(model, "Gelu") == 1  # the exact one stays exact
    assert_same_outputs(export, model)


def test_exact_gelu_is_never_approximated(contrib):
    export = exported("enc_ln_pre")
    model, report = fused(export, contrib, ["fast_gelu"])
    assert report.counts["fast_gelu"] == export.expected["fast_gelu"] == 0
    assert op_count(model, "Gelu") == 2 and op_count(model, "FastGelu", MS) == 0

import pytest

from tests.fusion.models import assert_same_outputs, exported, fused, op_count

MS = "com.microsoft"


@pytest.fixture(scope="module")
def opset18():
    """Layer 0 exact GELU spelled out with Erf, layer 1 the tanh approximation."""
    return exported("enc_gelu_opset18")


def test_fuses_the_erf_form(opset18, contrib):
    model, report = fused(opset18, contrib, ["gelu"])
    assert report.counts["gelu"] == report.rewrites["gelu"] == opset18.expected["gelu"] == 1
    assert op_count(model, "Erf") == 0
    assert op_count(model, "Gelu", MS if contrib else "") == 1
    assert report.opset == (18 if contrib else 20)  # ONNX Gelu is opset 20
    assert_same_outputs(opset18, model)


def test_counts_the_gelu_torch_emits(contrib):
    export = exported("enc_ln_pre")
    model, report = fused(export, contrib, ["gelu"])
    assert report.counts["gelu"] == export.expected["gelu"] == 2
    assert report.rewrites["gelu"] == 0
    assert_same_outputs(export, model)


def test_tanh_approximation_is_not_exact_gelu():
    export = exported("enc_gelu_tanh")
    _, report = fused(export, True, ["gelu"])
    assert report.counts["gelu"] == export.expected["gelu"] == 1


def test_none_in_a_swiglu_model():
    export = exported("dec_rms_pre_gqa")
    _, report = fused(export, True, ["gelu"])
    assert report.counts["gelu"] == export.expected["gelu"] == 0

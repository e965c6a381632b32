import pytest

from fastattn.exporter.fusion import fuse
from tests.fusion.models import assert_same_outputs, exported, fused, op_count

MS = "com.microsoft"


@pytest.mark.parametrize("name", ["enc_ln_pre", "enc_gelu_opset18"])
def test_folds_the_up_projection_bias_into_gelu(name):
    export = exported(name)
    model, report = fused(export, True, ["gelu", "bias_gelu"])
    assert report.counts["bias_gelu"] == export.expected["bias_gelu"] == (2 if name == "enc_ln_pre" else 1)
    assert op_count(model, "BiasGelu", MS) == report.counts["bias_gelu"]
    assert op_count(model, "Gelu") + op_count(model, "Gelu", MS) == 0
    assert_same_outputs(export, model)


def test_none_in_a_swiglu_model():
    export = exported("dec_rms_pre_gqa")
    _, report = fused(export, True, ["gelu", "bias_gelu"])
    assert report.counts["bias_gelu"] == export.expected["bias_gelu"] == 0


def test_skipped_without_contrib_ops():
    export = exported("enc_ln_pre")
    model = export.model()
    report = fuse(model, False, export.expected, rules=["gelu", "bias_gelu"])
    assert "contrib op" in report.skipped["bias_gelu"]
    assert op_count(model, "Gelu") == 2

import pytest

from fastattn.exporter.fusion import fuse
from tests.fusion.models import assert_same_outputs, exported, fused, op_count

MS = "com.microsoft"


@pytest.mark.parametrize("name", ["dec_rms_pre_gqa", "enc_rms_post"])
def test_fuses_each_residual_add_into_its_rms_norm(name):
    export = exported(name)
    model, report = fused(export, True, ["rms_norm", "skip_rms_norm"])
    assert report.counts["skip_rms_norm"] == export.expected["skip_rms_norm"] == 4
    assert op_count(model, "SkipSimplifiedLayerNormalization", MS) == 4
    # pre-LN keeps one plain norm (on the embedding), post-LN none
    assert op_count(model, "SimplifiedLayerNormalization") == (1 if name == "dec_rms_pre_gqa" else 0)
    assert_same_outputs(export, model)


def test_none_in_a_layer_norm_model():
    _, report = fused(exported("enc_ln_pre"), True, ["rms_norm", "skip_rms_norm"])
    assert report.counts["skip_rms_norm"] == 0


def test_skipped_without_contrib_ops():
    export = exported("dec_rms_pre_gqa")
    model = export.model()
    report = fuse(model, False, export.expected, rules=["rms_norm", "skip_rms_norm"])
    assert "contrib op" in report.skipped["skip_rms_norm"]
    assert op_count(model, "RMSNormalization") == 5

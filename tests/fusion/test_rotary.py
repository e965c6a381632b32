import pytest

from fastattn.errors import ExportError
from fastattn.exporter.fusion import fuse
from tests.fusion.models import assert_same_outputs, exported, fused, op_count

MS = "com.microsoft"


@pytest.mark.parametrize("name", ["enc_ln_pre", "dec_rms_pre_gqa", "enc_rms_post"])
def test_rotates_queries_and_keys_in_one_node(name, contrib):
    """Encoder (arange positions) and GQA decoder (positions from the mask, past cache), both targets."""
    export = exported(name)
    model, report = fused(export, contrib, ["rotary"])
    assert report.counts["rotary"] == report.rewrites["rotary"] == export.expected["rotary"] == 4
    assert op_count(model, "RotaryEmbedding", MS if contrib else "") == 4
    assert op_count(model, "Neg") == 0
    assert op_count(model, "Cos") == op_count(model, "Sin") == 1  # the tables are shared by every layer
    assert report.opset == (20 if contrib else 23)
    assert_same_outputs(export, model)


def test_none_with_learned_positions():
    export = exported("enc_ln_post_learned")
    model = export.model()
    with pytest.raises(ExportError, match=r"rotary fused 0 of 4 expected: no node starts a partial match"):
        fuse(model, True, {"rotary": 4}, rules=["rotary"])
    _, report = fused(export, False, ["rotary"])
    assert report.counts["rotary"] == export.expected["rotary"] == 0 and report.opset == 20


def test_check_explains_a_refusal():
    """Without the per-head view's shape the head count is unknown: that q stays unfused, and says why."""
    export = exported("enc_ln_pre")
    model = export.model()
    view = next(n for n in model.graph if n.op_type == "Reshape" and n.outputs[0].shape.rank() == 4)
    view.outputs[0].shape = None
    report = fuse(model, True, {"rotary": 4}, rules=["rotary"], allow_shortfall=True)
    assert report.counts["rotary"] == 3
    assert "check failed: the per-head view is not known to be 4-D" in report.shortfalls["rotary"].reason
    assert_same_outputs(export, model)

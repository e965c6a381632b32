import pytest

from fastattn.errors import ExportError
from fastattn.exporter.fusion import fuse
from tests.fusion.models import assert_same_outputs, exported, fused, op_count

MS = "com.microsoft"


@pytest.mark.parametrize(
    ("name", "graph", "count"),
    [("enc_ln_pre", "model", 4), ("enc_ln_post_learned", "model", 4), ("seq2seq", "decoder", 7)],
    ids=["pre-ln", "post-ln", "seq2seq-decoder"],
)
def test_fuses_each_residual_add_into_its_norm(name, graph, count):
    export = exported(name, graph)
    model, report = fused(export, True, ["layer_norm", "skip_layer_norm"])
    assert report.counts["skip_layer_norm"] == export.expected["skip_layer_norm"] == count
    assert op_count(model, "SkipLayerNormalization", MS) == count
    assert_same_outputs(export, model)


def test_first_pre_ln_norm_reads_the_embedding_not_an_add():
    """Pre-LN with rotary positions: the first norm's input is a Gather, so 4 of the 5 norms fuse."""
    export = exported("enc_ln_pre")
    model = export.model()
    with pytest.raises(ExportError, match=r"skip_layer_norm fused 4 of 5 expected: best partial match"):
        fuse(model, True, {"skip_layer_norm": 5}, rules=["layer_norm", "skip_layer_norm"])
    assert op_count(model, "LayerNormalization") == 1


def test_embedding_add_that_feeds_the_projections_stays_an_add():
    """Post-LN with learned positions: tokens + positions feeds q/k/v and the residual, no norm."""
    export = exported("enc_ln_post_learned")
    model, _ = fused(export, True, ["layer_norm", "skip_layer_norm"])
    from_gather = lambda v: v.producer() is not None and v.producer().op_type == "Gather"  # noqa: E731
    embedding_adds = [n for n in model.graph if n.op_type == "Add" and all(map(from_gather, n.inputs))]
    assert len(embedding_adds) == 1


def test_none_in_an_rms_norm_model():
    _, report = fused(exported("dec_rms_pre_gqa"), True, ["layer_norm", "skip_layer_norm"])
    assert report.counts["skip_layer_norm"] == 0


def test_skipped_without_contrib_ops():
    export = exported("enc_ln_pre")
    model = export.model()
    report = fuse(model, False, export.expected, rules=["layer_norm", "skip_layer_norm"])
    assert "contrib op" in report.skipped["skip_layer_norm"]
    assert "skip_layer_norm" not in report.counts
    assert op_count(model, "SkipLayerNormalization", MS) == 0


def test_off_by_default_for_its_measured_cost():
    export = exported("enc_ln_pre")
    model = export.model()
    report = fuse(model, True, export.expected)
    why = report.skipped["skip_layer_norm"]
    assert why.startswith("off by default: ORT 1.32 CPU runs SkipLayerNormalization slower")
    assert op_count(model, "LayerNormalization") == 5 and op_count(model, "SkipLayerNormalization", MS) == 0

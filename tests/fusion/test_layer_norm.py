import pytest

from tests.fusion.models import assert_same_outputs, exported, fused, op_count


@pytest.fixture(scope="module")
def ln_pre():
    return exported("enc_ln_pre")


@pytest.fixture(scope="module")
def rms():
    return exported("dec_rms_pre_gqa")


@pytest.mark.parametrize("name", ["enc_ln_pre", "enc_ln_post_learned"])
def test_counts_the_layer_norms_torch_emits(name, contrib):
    export = exported(name)
    model, report = fused(export, contrib, ["layer_norm"])
    assert report.counts["layer_norm"] == export.expected["layer_norm"] == (5 if name == "enc_ln_pre" else 4)
    assert report.rewrites["layer_norm"] == 0  # already one node each: nothing to rewrite
    assert op_count(model, "LayerNormalization") == report.counts["layer_norm"]
    assert_same_outputs(export, model)


def test_none_in_an_rms_norm_model(rms):
    _, report = fused(rms, True, ["layer_norm"])
    assert report.counts["layer_norm"] == rms.expected["layer_norm"] == 0

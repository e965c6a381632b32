"""Shared fixtures: tiny checkpoints and one export of each, made once per test session."""

from __future__ import annotations

import pytest

from fastattn.exporter.pipeline import ExportOptions, export
from fastattn.models import LayerAttention, ModelConfig, build, save
from fastattn.models.config import Norm

TINY_DECODER = ModelConfig(
    name="tiny-decoder", vocab_size=64, d_model=32, num_heads=4, kv_heads=2, ffn_dim=64, norm=Norm.RMS,
    decoder_layers=(LayerAttention.parse("sliding:8"), LayerAttention()),
)  # fmt: skip
TINY_SEQ2SEQ = ModelConfig(
    name="tiny-seq2seq", vocab_size=64, d_model=32, num_heads=4, kv_heads=1, ffn_dim=64,
    encoder_layers=(LayerAttention.parse("global_local:2:8"),), decoder_layers=(LayerAttention.parse("sliding:8"),),
)  # fmt: skip


TRAINED_LM = ModelConfig(
    name="tiny-trained-lm", vocab_size=256, d_model=48, num_heads=4, kv_heads=2, ffn_dim=96, norm=Norm.RMS,
    decoder_layers=(LayerAttention.parse("sliding:16"), LayerAttention()),
)  # fmt: skip


@pytest.fixture(scope="session")
def trained_lm(tmp_path_factory):
    """A tiny byte-level LM trained for a second on stdlib sources, with its held-out set and tokenizer
    (accuracy gates need trained weights: random ones move by chance)."""
    from fastattn.train.cache import CACHE_ENV, trained
    from fastattn.train.trainer import TrainOptions

    options = TrainOptions(lr=3e-3, threads=1, eval_samples=16)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(tmp_path_factory.mktemp("cache")))
        return trained("lm", TRAINED_LM, steps=60, batch=16, seq=64, options=options)


@pytest.fixture(scope="session")
def decoder_checkpoint(tmp_path_factory):
    return save(build(TINY_DECODER, seed=0), tmp_path_factory.mktemp("ckpt") / "decoder.pt")


@pytest.fixture(scope="session")
def decoder_export(decoder_checkpoint, tmp_path_factory):
    """(checkpoint path, ExportResult) of the tiny decoder."""
    out = tmp_path_factory.mktemp("export") / "decoder"
    return decoder_checkpoint, export(decoder_checkpoint, ExportOptions(out))


@pytest.fixture(scope="session")
def seq2seq_export(tmp_path_factory):
    root = tmp_path_factory.mktemp("seq2seq")
    ckpt = save(build(TINY_SEQ2SEQ, seed=0), root / "seq2seq.pt")
    return ckpt, export(ckpt, ExportOptions(root / "out"))

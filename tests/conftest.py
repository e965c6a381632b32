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

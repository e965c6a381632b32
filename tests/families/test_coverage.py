"""Every registered model family has a tiny model here, exports it, validates, and (where it can) generates."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fastattn.exporter.pipeline import ExportOptions, export
from fastattn.families.module.input_spec import parse_input_spec
from fastattn.families.registry import FAMILIES, ModelSource, find
from fastattn.models import LayerAttention, ModelConfig, build, save
from fastattn.runtime import load
from tests.hf import checkpoints


def fastattn_decoder(directory: Path) -> tuple[Path, dict]:
    cfg = ModelConfig(name="cover", vocab_size=48, d_model=32, num_heads=4, kv_heads=2, ffn_dim=64,
                      decoder_layers=(LayerAttention.parse("sliding:6"), LayerAttention()))  # fmt: skip
    return save(build(cfg, seed=3), directory / "decoder.pt"), {}


def pickled_module(directory: Path) -> tuple[Path, dict]:
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, batch_first=True, dropout=0.0)
    model = torch.nn.TransformerEncoder(layer, 1, enable_nested_tensor=False).eval()
    torch.save(model, directory / "encoder.pt")
    return directory / "encoder.pt", {"allow_pickle": True, "inputs": (parse_input_spec("src:batch,seq,16:float32"),)}


def huggingface_llama(directory: Path) -> tuple[Path, dict]:
    return checkpoints.llama(directory / "llama"), {}


BUILDERS = {"fastattn": fastattn_decoder, "huggingface": huggingface_llama, "module": pickled_module}


def test_every_registered_family_has_a_tiny_model_here():
    assert {f.name for f in FAMILIES} == set(BUILDERS)


@pytest.mark.parametrize("family", [f.name for f in FAMILIES])
def test_family_exports_validates_and_generates(family, tmp_path):
    path, options = BUILDERS[family](tmp_path)
    assert find(ModelSource(path, options.get("allow_pickle", False))).name == family
    result = export(path, ExportOptions(tmp_path / "out", repeats=2, **options))
    manifest = result.manifest
    assert result.validation.passed and manifest.family == family and len(manifest.attention) >= 1
    assert all(a.lowering != "portable" for a in manifest.attention)  # a CPU kernel for every attention
    model = load(result.output)
    if manifest.arch.generates:
        tokens = model.generate([[1, 2, 3], [4, 5]], max_new_tokens=8).tokens
        assert [len(t) for t in tokens] == [8, 8]
    else:
        sample = model.sample(sizes={d: 3 for d in model.graph().dims()})
        assert all(v.size for v in model.run(sample).values())

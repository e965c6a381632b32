"""Foreign models, items of the Hugging Face issue: token ranges of integer inputs, a mask sliced at a size
computed by the graph (BART's crash), and quantization of a graph whose dims are not named like fastattn's."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastattn.exporter.pipeline import ExportOptions, export
from fastattn.families.module.input_spec import FALLBACK_RANGE, parse_input_spec, resolve_token_ranges, vocabulary_size
from fastattn.quantize import Mode, QuantOptions
from fastattn.quantize.step import QuantizeStep
from fastattn.runtime.manifest import Fill


class Embedder(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(37, 16)
        self.encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32, batch_first=True), 1)

    def forward(self, ids, mask):
        return self.encoder(self.embed(ids), src_key_padding_mask=mask == 0)


def test_integer_inputs_take_the_models_vocabulary_and_masks_by_name():
    specs = [parse_input_spec("ids:batch,seq:int64"), parse_input_spec("attention_mask:batch,seq:int64"),
             parse_input_spec("other:batch,seq:int64:<5")]  # fmt: skip
    ids, mask, other = resolve_token_ranges(specs, vocabulary_size(Embedder()))
    assert (ids.fill, ids.high) == (Fill.TOKENS, 37)
    assert mask.fill is Fill.MASK
    assert other.high == 5  # an explicit range wins
    assert resolve_token_ranges(specs[:1], vocabulary_size(nn.Linear(2, 2)))[0].high == FALLBACK_RANGE
    scripted = torch.jit.script(Embedder().eval())
    assert vocabulary_size(scripted) == 37


class SlicedMask(nn.Module):
    """SDPA whose key-padding mask is sliced to ``q.shape[2]`` keys: the slice's end is a graph node."""

    def forward(self, x, pad):
        B, S, _ = x.shape
        q = x.view(B, S, 2, 8).transpose(1, 2)
        mask = torch.zeros(B, S, dtype=x.dtype).masked_fill(pad, float("-inf"))[:, None, None, :].expand(B, 1, S, S)
        mask = mask[:, :, :, : q.shape[2]]
        return F.scaled_dot_product_attention(q, q, q, attn_mask=mask).transpose(1, 2).reshape(B, S, 16)


def test_mask_sliced_at_a_computed_size_is_declared_not_a_crash(tmp_path):
    x, pad = torch.randn(2, 7, 16), torch.zeros(2, 7, dtype=torch.bool)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
    program = torch.export.export(SlicedMask(), (x, pad), dynamic_shapes=({0: batch, 1: seq}, {0: batch, 1: seq}))
    path = tmp_path / "sliced.pt2"
    torch.export.save(program, path)
    result = export(path, ExportOptions(tmp_path / "out", repeats=2))
    assert len(result.manifest.attention) == 1 and result.validation.passed


def test_int8_of_a_graph_with_its_own_dim_names(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "embedder.pt"
    torch.save(Embedder().eval(), path)
    inputs = (parse_input_spec("ids:b,seq:int64"), parse_input_spec("mask:b,seq:int64"))
    step = QuantizeStep(QuantOptions(Mode.INT8))
    result = export(path, ExportOptions(tmp_path / "q", inputs=inputs, allow_pickle=True, repeats=2, quantize=step,
                                        threads=1))  # fmt: skip
    q = result.manifest.quantization
    assert q.passed and q.data == "8 random samples of 128 tokens" and q.figures["quantized"].cosine > 0.99

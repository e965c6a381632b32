"""Tiny fastattn exports for the fusion tests, generated from one base config.

Each variant changes a few fields of :data:`BASE` (and, for the GELU-approximation
cases, the FFN activation module or the export opset). Exports are made once per test
session (``exported`` is cached; test modules hold them in module-scoped fixtures) and
every test fuses its own fresh copy (``Export.model()``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
from torch import nn

from fastattn.exporter.capture import DEFAULT_OPSET, capture
from fastattn.exporter.fusion import fuse
from fastattn.families.fastattn.fusions import expected_counts
from fastattn.families.fastattn.graphs import model_graphs
from fastattn.families.graphs import GraphDef
from fastattn.models import LayerAttention, ModelConfig, build
from fastattn.models.config import Activation, Norm, NormPosition, Positions

TWO = (LayerAttention(), LayerAttention())
BASE = ModelConfig(
    name="fusion", vocab_size=64, d_model=32, num_heads=4, kv_heads=4, ffn_dim=64, encoder_layers=TWO
)


@dataclass(frozen=True)
class Variant:
    config: ModelConfig
    opset: int = DEFAULT_OPSET
    # per layer: replace the FFN activation by nn.GELU(approximate=...)
    gelu_approximations: tuple[str, ...] = ()


VARIANTS = {
    # LayerNorm, pre-LN, rotary, GELU, encoder
    "enc_ln_pre": Variant(BASE),
    # RMSNorm, pre-LN, rotary, SwiGLU, grouped-query decoder with a cache and a sliding layer
    "dec_rms_pre_gqa": Variant(BASE.replace(
        encoder_layers=(), decoder_layers=(LayerAttention(), LayerAttention.parse("sliding:4")),
        kv_heads=2, norm=Norm.RMS, activation=Activation.SWIGLU)),
    # LayerNorm, post-LN, learned positions, ReLU, encoder
    "enc_ln_post_learned": Variant(BASE.replace(
        norm_position=NormPosition.POST, positions=Positions.LEARNED, activation=Activation.RELU)),
    # RMSNorm, post-LN, rotary, GELU, encoder
    "enc_rms_post": Variant(BASE.replace(norm=Norm.RMS, norm_position=NormPosition.POST)),
    # encoder-decoder: cross-attention, learned positions
    "seq2seq": Variant(BASE.replace(decoder_layers=TWO, positions=Positions.LEARNED, kv_heads=2)),
    # opset 18 spells GELU out: layer 0 exact (erf), layer 1 tanh approximation
    "enc_gelu_opset18": Variant(BASE, opset=18, gelu_approximations=("none", "tanh")),
    # opset 20: layer 0 Gelu, layer 1 Gelu(approximate="tanh")
    "enc_gelu_tanh": Variant(BASE, gelu_approximations=("none", "tanh")),
}  # fmt: skip

# Sizes other than the traced ones, with padding: fused graphs must hold at new shapes.
SIZES = {"batch": 3, "sequence": 6, "past_sequence": 5, "encoder_sequence": 4}


@dataclass
class Export:
    name: str
    config: ModelConfig
    graph: GraphDef
    proto: bytes
    expected: dict[str, int] = field(default_factory=dict)

    def model(self) -> ir.Model:
        """A fresh copy to fuse."""
        return ir.from_proto(_parse(self.proto))

    def feeds(self) -> dict[str, np.ndarray]:
        arrays = self.graph.sample(self.graph.sizes(SIZES), seed=1, padded=True)
        return {spec.name: a.numpy() for spec, a in zip(self.graph.inputs, arrays)}


def _parse(blob: bytes):
    import onnx

    return onnx.load_from_string(blob)


@functools.cache
def _export_all(name: str) -> dict[str, Export]:
    variant = VARIANTS[name]
    model = build(variant.config, seed=0)
    stack = model.encoder if variant.config.encoder_layers else model.decoder
    for layer, approximate in zip(stack.layers, variant.gelu_approximations):
        layer.ffn.act = nn.GELU(approximate=approximate)
    out = {}
    for graph in model_graphs(model):
        proto = ir.to_proto(capture(graph, opset=variant.opset)).SerializeToString()
        expected = expected_counts(variant.config, None if graph.name == "model" else graph.name)
        if variant.gelu_approximations:  # the config says GELU; some layers were switched to tanh
            exact = variant.gelu_approximations.count("none")
            expected.update(gelu=exact, bias_gelu=exact, fast_gelu=len(variant.gelu_approximations) - exact)
        out[graph.name] = Export(name, variant.config, graph, proto, expected)
    return out


def exported(name: str, graph: str = "model") -> Export:
    """The export of variant ``name`` (graph ``encoder``/``decoder`` for seq2seq), made once per session."""
    return _export_all(name)[graph]


def run(model: ir.Model | bytes, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    blob = model if isinstance(model, bytes) else ir.to_proto(model).SerializeToString()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"]).run(None, feeds)


def assert_same_outputs(export: Export, fused: ir.Model, rtol: float = 1e-5) -> float:
    """ORT outputs before and after fusion agree: max |a - b| <= rtol * max |a| for every output."""
    feeds = export.feeds()
    worst = 0.0
    for before, after in zip(run(export.proto, feeds), run(fused, feeds), strict=True):
        assert before.shape == after.shape
        scale = max(float(np.abs(before).max()), 1e-30)
        error = float(np.abs(before - after).max()) / scale
        assert error <= rtol, f"relative error {error:.2e} > {rtol:.0e}"
        worst = max(worst, error)
    return worst


def fused(export: Export, contrib: bool, rules: list[str], **kwargs):
    """(fused model, report) with only ``rules`` run and their expected counts enforced."""
    model = export.model()
    expected = {name: export.expected[name] for name in rules}
    report = fuse(model, contrib, expected, rules=rules, **kwargs)
    return model, report


def op_count(model: ir.Model, op_type: str, domain: str = "") -> int:
    nodes = ir.traversal.RecursiveGraphIterator(model.graph)
    return sum(1 for n in nodes if n.op_type == op_type and n.domain == domain)

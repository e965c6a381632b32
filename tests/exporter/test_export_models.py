"""Every architecture x attention kind x head layout: exported, one fastattn node per attention,
and ONNX Runtime equal to PyTorch at shapes other than the traced ones (windows shorter and
longer than the sequence, padded batches, prefill + decode steps through the cache)."""

from __future__ import annotations

import onnx_ir as ir
import onnxruntime as ort
import pytest

from fastattn.exporter.capture import capture
from fastattn.exporter.validate import default_cases, validate
from fastattn.families.fastattn.graphs import max_length, model_graphs, windows
from fastattn.models import LayerAttention, ModelConfig, build
from fastattn.models.config import Activation, Norm, NormPosition, Positions

FULL, SLIDE4, SLIDE16 = (
    LayerAttention(),
    LayerAttention.parse("sliding:4"),
    LayerAttention.parse("sliding:16"),
)
GLOBAL = LayerAttention.parse("global_local:2:4")
HIER4, HIER5, CAUSAL = (LayerAttention.parse(p) for p in ("hierarchical:4", "hierarchical:5", "causal"))


def tiny(**changes) -> ModelConfig:
    base = dict(vocab_size=40, d_model=32, num_heads=4, kv_heads=4, ffn_dim=48, max_positions=256)
    return ModelConfig(**{**base, **changes})


MODELS = {
    "encoder-mha-learned-postln": tiny(encoder_layers=(FULL, SLIDE4, GLOBAL), positions=Positions.LEARNED,
                                       norm_position=NormPosition.POST, num_labels=3),
    "encoder-gqa-rotary-rms": tiny(kv_heads=2, encoder_layers=(SLIDE16, GLOBAL), norm=Norm.RMS),
    "decoder-mqa-rotary-swiglu": tiny(kv_heads=1, decoder_layers=(SLIDE4, GLOBAL, FULL), activation=Activation.SWIGLU,
                                      norm=Norm.RMS),
    "decoder-gqa-learned-postln": tiny(kv_heads=2, decoder_layers=(SLIDE16, FULL), positions=Positions.LEARNED,
                                       norm_position=NormPosition.POST, activation=Activation.RELU),
    "seq2seq-gqa": tiny(kv_heads=2, encoder_layers=(SLIDE4, FULL), decoder_layers=(FULL, SLIDE4)),
    "decoder-llama-no-bias": tiny(kv_heads=2, decoder_layers=(FULL, SLIDE16), activation=Activation.SWIGLU,
                                  norm=Norm.RMS, bias=False, tie_embeddings=False),
    "encoder-hierarchical-causal": tiny(kv_heads=2, encoder_layers=(HIER4, CAUSAL, HIER5), num_labels=2),
    "seq2seq-hierarchical": tiny(kv_heads=1, encoder_layers=(HIER5,), decoder_layers=(HIER4, FULL),
                                 positions=Positions.LEARNED),
}  # fmt: skip


def attention_count(cfg: ModelConfig, graph: str) -> int:
    """fastattn nodes expected in a graph: self-attention per layer, plus cross-attention in seq2seq decoders."""
    if graph == "encoder":
        return len(cfg.encoder_layers)
    if graph == "decoder":
        return 2 * len(cfg.decoder_layers)
    return len(cfg.encoder_layers) + len(cfg.decoder_layers)


@pytest.fixture(scope="module", params=list(MODELS), ids=list(MODELS))
def exported(request, tmp_path_factory):
    cfg = MODELS[request.param]
    graphs = model_graphs(build(cfg, seed=1))
    directory = tmp_path_factory.mktemp(request.param)
    models = {}
    for g in graphs:
        models[g.name] = capture(g)
        ir.save(models[g.name], directory / g.file)
    return cfg, graphs, models, directory


def test_one_fastattn_node_per_attention_and_no_softmax(exported):
    cfg, graphs, models, _ = exported
    for name, model in models.items():
        ops = [(n.domain, n.op_type) for n in model.graph]
        assert ops.count(("fastattn", "Attention")) == attention_count(cfg, name)
        assert ("", "Softmax") not in ops and ("", "MatMul") in ops  # attention is declared, not decomposed


def test_onnx_runtime_matches_pytorch(exported):
    cfg, graphs, models, directory = exported
    runners = {}
    for g in graphs:
        session = ort.InferenceSession(str(directory / g.file), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        runners[g.name] = lambda feeds, s=session, names=names: dict(zip(names, s.run(None, dict(feeds))))
    cases = [c for g in graphs for c in default_cases(g, max(windows(cfg), default=0), max_length(cfg))]
    result = validate(graphs, runners, cases)
    assert result.passed, result.failures()
    assert len(result.cases) == sum(4 if g.cache else 3 for g in graphs)
    longest = max(c.case.sizes.get("sequence", c.case.sizes.get("encoder_sequence", 0)) for c in result.cases)
    assert longest > 2 * max(windows(cfg))  # sequences longer than every window were checked
    assert result.worst().max_rel < 1e-5

"""The graphs of a fastattn model: flat-tensor wrappers with declared inputs and outputs.

    encoder          model.onnx    input_ids, attention_mask -> last_hidden_state[, logits]
    decoder          model.onnx    input_ids, attention_mask, past_key_i/past_value_i
                                   -> logits, present_key_i/present_value_i
    encoder-decoder  encoder.onnx  input_ids, attention_mask
                                   -> encoder_hidden_states, cross_key_i/cross_value_i
                     decoder.onnx  input_ids, attention_mask, encoder_attention_mask,
                                   cross_key_i/cross_value_i, past_key_i/past_value_i
                                   -> logits, present_key_i/present_value_i

Caches are (batch, kv_heads, past_sequence, head_size); a windowed layer's cache is
capped: ``min(past_sequence,K)`` with K = G + W - 1, a hierarchical layer's is
``summarized(past_sequence,B)``: ⌊P/B⌋ block summaries + the P mod B keys of the open
block (see fastattn.models.cache).
Cross keys/values are packed
(batch, encoder_sequence, kv_heads·head_size), projected once per encoding. Masks are
1 for tokens, 0 for padding, over every key position.
"""

from __future__ import annotations

import torch
from torch import nn

from fastattn.families.graphs import GraphDef
from fastattn.models.config import Arch, ModelConfig
from fastattn.models.layers import KV
from fastattn.models.transformer import FastAttnModel
from fastattn.runtime.dims import capped, summarized
from fastattn.runtime.manifest import CachePair, Fill, TensorSpec

DIMS = {
    "batch": "batch size",
    "sequence": "new tokens in this call",
    "past_sequence": "tokens already in the cache",
    "past_sequence+sequence": "cache length after this call",
    "encoder_sequence": "encoder tokens",
    "min(a,K)": "a, at most K: the cache of a windowed layer keeps its G global and last W-1 positions",
    "summarized(a,B)": "a//B + a%B: the cache of a hierarchical layer keeps one summary per complete block "
    "of B positions, then the keys of the open block",
}
TOTAL = "past_sequence+sequence"


def _pairs(flat: tuple[torch.Tensor, ...]) -> list[KV]:
    return list(zip(flat[0::2], flat[1::2]))


def _flat(pairs: list[KV]) -> tuple[torch.Tensor, ...]:
    return tuple(t for pair in pairs for t in pair)


class _Encoder(nn.Module):
    def __init__(self, model: FastAttnModel):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids, attention_mask)


class _Decoder(nn.Module):
    def __init__(self, model: FastAttnModel):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, *past):
        logits, presents = self.model(input_ids, attention_mask, _pairs(past))
        return (logits, *_flat(presents))


class _Seq2SeqEncoder(nn.Module):
    def __init__(self, model: FastAttnModel):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        memory = self.model.encode(input_ids, attention_mask)
        return (memory, *_flat(self.model.cross_kv(memory)))


class _Seq2SeqDecoder(nn.Module):
    def __init__(self, model: FastAttnModel):
        super().__init__()
        self.model = model
        self.layers = len(model.config.decoder_layers)

    def forward(self, input_ids, attention_mask, encoder_attention_mask, *caches):
        cross, past = _pairs(caches[: 2 * self.layers]), _pairs(caches[2 * self.layers :])
        logits, presents = self.model.decode(input_ids, cross, encoder_attention_mask, attention_mask, past)
        return (logits, *_flat(presents))


def model_graphs(model: FastAttnModel, whole_cache: bool = False) -> list[GraphDef]:
    """The graphs to export for a fastattn model; ``whole_cache``: windowed layers keep every
    cache position too (the ``--kv-buffer`` path, whose cache is one buffer of fixed length)."""
    cfg = model.config
    model = model.eval()
    if whole_cache:
        model.keep_whole_caches()
    if cfg.arch is Arch.ENCODER:
        outputs = [TensorSpec("last_hidden_state", "float32", ("batch", "sequence", cfg.d_model))]
        if cfg.num_labels:
            outputs.append(TensorSpec("logits", "float32", ("batch", cfg.num_labels)))
        return [GraphDef("model", _Encoder(model), _prompt(cfg, "sequence"), outputs)]
    if cfg.arch is Arch.DECODER:
        return [_decoder_graph("model", _Decoder(model), cfg, [], whole_cache)]
    kv = cfg.kv_heads * cfg.head_size
    layers = range(len(cfg.decoder_layers))
    cross = [TensorSpec(f"cross_{kind}_{i}", "float32", ("batch", "encoder_sequence", kv)) for i in layers
             for kind in ("key", "value")]  # fmt: skip
    encoder = GraphDef(
        "encoder",
        _Seq2SeqEncoder(model),
        _prompt(cfg, "encoder_sequence"),
        [TensorSpec("encoder_hidden_states", "float32", ("batch", "encoder_sequence", cfg.d_model)), *cross],
    )
    extra = [TensorSpec("encoder_attention_mask", "int64", ("batch", "encoder_sequence"), Fill.MASK), *cross]
    return [encoder, _decoder_graph("decoder", _Seq2SeqDecoder(model), cfg, extra, whole_cache)]


def _prompt(cfg: ModelConfig, seq: str) -> list[TensorSpec]:
    return [
        TensorSpec("input_ids", "int64", ("batch", seq), Fill.TOKENS, high=cfg.vocab_size),
        TensorSpec("attention_mask", "int64", ("batch", seq), Fill.MASK),
    ]


def _decoder_graph(name: str, module: nn.Module, cfg: ModelConfig, extra: list[TensorSpec],
                   whole_cache: bool) -> GraphDef:  # fmt: skip
    specs = [layer.spec(cfg.num_heads, cfg.kv_heads, causal=True) for layer in cfg.decoder_layers]
    held = lambda length, spec: (length if whole_cache  # noqa: E731
                                 else summarized(capped(length, spec.cache_limit), spec.block))  # fmt: skip
    cache = lambda prefix, length: [  # noqa: E731
        TensorSpec(f"{prefix}_{kind}_{i}", "float32", ("batch", cfg.kv_heads, held(length, spec), cfg.head_size))
        for i, spec in enumerate(specs) for kind in ("key", "value")
    ]  # fmt: skip
    inputs = [
        TensorSpec("input_ids", "int64", ("batch", "sequence"), Fill.TOKENS, high=cfg.vocab_size),
        TensorSpec("attention_mask", "int64", ("batch", TOTAL), Fill.MASK),
        *extra,
        *cache("past", "past_sequence"),
    ]
    outputs = [TensorSpec("logits", "float32", ("batch", "sequence", cfg.vocab_size)), *cache("present", TOTAL)]
    pairs = [CachePair(f"past_{kind}_{i}", f"present_{kind}_{i}") for i in range(len(specs)) for kind in ("key", "value")]
    return GraphDef(name, module, inputs, outputs, cache=pairs)


def max_length(cfg: ModelConfig) -> int | None:
    """The longest sequence (cache included) the model can take: learned positions have a table."""
    return cfg.position_limit


def windows(cfg: ModelConfig) -> list[int]:
    """Every attention window and hierarchical block in the model (validation shapes run past them)."""
    return [layer.window or layer.block for layer in (*cfg.encoder_layers, *cfg.decoder_layers)
            if layer.window or layer.block]  # fmt: skip

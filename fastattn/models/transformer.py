"""The fastattn Transformer family: encoder, decoder-only LM, encoder-decoder.

Masks follow one convention everywhere: (B, L) with 1 = a real token, 0 = padding, over
every key position (past + new for decoders). Decoder positions come from the mask
(``cumsum - 1``), so left-padded batches get the same positions as unpadded rows;
encoder positions count slots. ``ModelConfig.position_ids`` changes that for models whose
positions are defined otherwise (RoBERTa counts tokens in encoders too, BART counts slots
in decoders too).
"""

from __future__ import annotations

import torch
from torch import nn

from fastattn.models import cache
from fastattn.models.config import Arch, ModelConfig, NormPosition, PositionIds, Positions
from fastattn.models.layers import KV, Rotary, TransformerLayer, make_norm


class Embedding(nn.Module):
    """Token embedding (times ``embedding_scale``) plus learned positions (table row position +
    ``position_offset``) or rotary angles for the attention layers; then the embedding norm, if any."""

    def __init__(self, cfg: ModelConfig, tokens: nn.Embedding):
        super().__init__()
        self.tokens = tokens
        self.learned = nn.Embedding(cfg.max_positions, cfg.d_model) if cfg.positions is Positions.LEARNED else None
        rotary = cfg.positions is Positions.ROTARY
        self.rotary = Rotary(cfg.head_size, cfg.rope_theta, cfg.rope_scaling) if rotary else None
        self.norm = make_norm(cfg) if cfg.embedding_norm else None
        self.scale, self.offset = cfg.embedding_scale, cfg.position_offset

    def forward(self, ids: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, KV | None]:
        x = self.tokens(ids)
        if self.scale != 1.0:
            x = x * self.scale
        rope = None
        if self.learned is not None:
            x = x + self.learned(positions + self.offset if self.offset else positions)
        else:
            rope = self.rotary(positions)
        return (x if self.norm is None else self.norm(x)), rope


class Stack(nn.Module):
    """Layers with one attention pattern each, and the final norm of pre-LN stacks.

    Windowed causal layers keep only the cache positions a later query can see
    (:mod:`fastattn.models.cache`); ``keep_whole_cache = True`` turns that off (a reference).
    """

    keep_whole_cache = False

    def __init__(self, cfg: ModelConfig, layers, causal: bool, cross: bool = False):
        super().__init__()
        self.layers = nn.ModuleList(
            TransformerLayer(cfg, layer.spec(cfg.num_heads, cfg.kv_heads, causal), cross) for layer in layers
        )
        self.final_norm = make_norm(cfg) if cfg.norm_position is NormPosition.PRE else nn.Identity()

    def forward(
        self,
        x: torch.Tensor,
        rope: KV | None,
        key_mask: torch.Tensor | None,
        past: list[KV] | None = None,
        memory_kv: list[KV] | None = None,
        memory_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, list[KV]]:
        presents = []
        for i, layer in enumerate(self.layers):
            spec = layer.self_attn.spec
            layer_past = past[i] if past else None
            keys = x.shape[1] + (layer_past[0].shape[2] if layer_past is not None else 0)
            mask = key_mask if self.keep_whole_cache else cache.layer_mask(key_mask, keys, spec)
            x, present = layer(x, rope, mask, layer_past, memory_kv[i] if memory_kv else None, memory_mask)
            presents.append(present if self.keep_whole_cache else cache.keep(present, spec, key_mask))
        return self.final_norm(x), presents


def decoder_positions(
    input_ids: torch.Tensor, attention_mask: torch.Tensor | None, past_length: int, slots: bool = False
) -> torch.Tensor:
    """Positions of the new tokens: from the mask when given (left padding), else past_length + arange.
    ``slots``: count slots, padding included (the cache length from the mask's width, then arange)."""
    S = input_ids.shape[1]
    if slots and attention_mask is not None:
        past_length = attention_mask.shape[1] - S
    if attention_mask is None or slots:
        return torch.arange(past_length, past_length + S, device=input_ids.device).expand(input_ids.shape[0], S)
    # cumsum(mask)[:, -S:] - 1, without a (B, past+S) intermediate: a decode step's work and
    # memory must not grow with the sequence (ORT's arena grew 20 MB over 8k steps with one)
    mask = attention_mask.long()
    new = mask[:, mask.shape[1] - S :]
    before = mask.sum(-1, keepdim=True) - new.sum(-1, keepdim=True)
    return (before + new.cumsum(-1) - 1).clamp(min=0)


def encoder_positions(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, tokens: bool) -> torch.Tensor:
    """Slots 0..S-1, or with ``tokens`` the mask's tokens counted (padding left out, clamped at 0)."""
    B, S = input_ids.shape
    if tokens and attention_mask is not None:
        return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    return torch.arange(S, device=input_ids.device).expand(B, S)


def _past_length(stack: Stack, attention_mask: torch.Tensor | None, past: list[KV] | None) -> int:
    """Tokens already in the cache, needed only for calls without a mask: the longest layer cache.

    Windowed layers trim their caches, so when every layer is windowed and a cache is full
    the true length is unknown: such calls need the mask, where positions come from. So do
    calls onto the compact cache of a hierarchical layer (its slots are not its positions).
    """
    if attention_mask is not None or not past:
        return 0
    lengths = [p[0].shape[2] for p in past]
    specs = [layer.self_attn.spec for layer in stack.layers]
    if not stack.keep_whole_cache and any(s.block and n for s, n in zip(specs, lengths, strict=True)):
        raise ValueError(
            "a hierarchical layer keeps block summaries in its cache, so the position of new tokens is "
            "unknown: pass attention_mask over every token of the sequence"
        )
    limits = [spec.cache_limit for spec in specs]
    if not stack.keep_whole_cache and all(limits) and any(n >= k for n, k in zip(lengths, limits, strict=True)):
        raise ValueError(
            "every layer is windowed and its cache is full, so the position of new tokens is unknown: "
            "pass attention_mask over every token of the sequence"
        )
    return max(lengths)


def _positions(cfg: ModelConfig, stack: Stack, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
               past: list[KV] | None) -> torch.Tensor:  # fmt: skip
    """Positions of a decoder's new tokens, as the config counts them."""
    slots = cfg.position_ids is PositionIds.SLOTS
    return decoder_positions(input_ids, attention_mask, _past_length(stack, attention_mask, past), slots)


class FastAttnModel(nn.Module):
    """Base of the family; ``FastAttnModel.from_config(cfg)`` builds the right architecture."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg

    @staticmethod
    def from_config(cfg: ModelConfig) -> FastAttnModel:
        cls = {Arch.ENCODER: EncoderModel, Arch.DECODER: DecoderModel, Arch.ENCODER_DECODER: EncoderDecoderModel}
        return cls[cfg.arch](cfg)

    def keep_whole_caches(self, whole: bool = True) -> FastAttnModel:
        """Windowed layers keep every cache position (a reference, or a fixed-length cache buffer)."""
        for module in self.modules():
            if isinstance(module, Stack):
                module.keep_whole_cache = whole
        return self

    def _lm_head(self, tokens: nn.Embedding) -> nn.Linear:
        head = nn.Linear(self.config.d_model, self.config.vocab_size, bias=self.config.lm_head_bias)
        if self.config.tie_embeddings:
            head.weight = tokens.weight
        return head


class EncoderModel(FastAttnModel):
    """Bidirectional encoder: (input_ids, attention_mask) -> last_hidden_state [, logits]."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.embed = Embedding(cfg, nn.Embedding(cfg.vocab_size, cfg.d_model))
        self.encoder = Stack(cfg, cfg.encoder_layers, causal=False)
        self.classifier = nn.Linear(cfg.d_model, cfg.num_labels) if cfg.num_labels else None

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, ...]:
        tokens = self.config.position_ids is PositionIds.TOKENS
        x, rope = self.embed(input_ids, encoder_positions(input_ids, attention_mask, tokens))
        hidden, _ = self.encoder(x, rope, attention_mask)
        if self.classifier is None:
            return (hidden,)
        weights = torch.ones_like(input_ids, dtype=hidden.dtype) if attention_mask is None else attention_mask
        weights = weights.to(hidden.dtype)[..., None]
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return hidden, self.classifier(pooled)


class DecoderModel(FastAttnModel):
    """Causal LM with a KV cache: (input_ids, attention_mask, past) -> (logits, presents)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        tokens = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.embed = Embedding(cfg, tokens)
        self.decoder = Stack(cfg, cfg.decoder_layers, causal=True)
        self.lm_head = self._lm_head(tokens)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, past: list[KV] | None = None
    ) -> tuple[torch.Tensor, list[KV]]:
        x, rope = self.embed(input_ids, _positions(self.config, self.decoder, input_ids, attention_mask, past))
        hidden, presents = self.decoder(x, rope, attention_mask, past)
        return self.lm_head(hidden), presents


class EncoderDecoderModel(FastAttnModel):
    """Sequence-to-sequence: encode once, then decode with a self-attention cache.

    Cross-attention keys/values are projected once per encoding (:meth:`cross_kv`) and
    reused at every decoding step.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        tokens = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.embed = Embedding(cfg, tokens)
        self.encoder = Stack(cfg, cfg.encoder_layers, causal=False)
        self.decoder = Stack(cfg, cfg.decoder_layers, causal=True, cross=True)
        self.lm_head = self._lm_head(tokens)
        # the decoder's own positions and embedding norm (BART), sharing the token embedding
        self.decoder_embed = Embedding(cfg, tokens) if cfg.per_stack_embedding else None

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        tokens = self.config.position_ids is PositionIds.TOKENS
        x, rope = self.embed(input_ids, encoder_positions(input_ids, attention_mask, tokens))
        return self.encoder(x, rope, attention_mask)[0]

    def cross_kv(self, memory: torch.Tensor) -> list[KV]:
        return [layer.cross_attn.project(memory) for layer in self.decoder.layers]

    def decode(
        self,
        input_ids: torch.Tensor,
        memory_kv: list[KV],
        encoder_attention_mask: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        past: list[KV] | None = None,
    ) -> tuple[torch.Tensor, list[KV]]:
        embed = self.decoder_embed if self.decoder_embed is not None else self.embed
        x, rope = embed(input_ids, _positions(self.config, self.decoder, input_ids, attention_mask, past))
        hidden, presents = self.decoder(x, rope, attention_mask, past, memory_kv, encoder_attention_mask)
        return self.lm_head(hidden), presents

    def forward(
        self,
        input_ids: torch.Tensor,
        decoder_input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        memory = self.encode(input_ids, attention_mask)
        logits, _ = self.decode(decoder_input_ids, self.cross_kv(memory), attention_mask, decoder_attention_mask)
        return logits

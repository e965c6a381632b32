"""BART and Marian: post-LN encoder-decoders with learned (BART) or sinusoidal (Marian) positions.

    bart    positions from row 2 of each stack's own table (offset 2), an embedding LayerNorm
            per stack, GELU; decoder positions count slots; logits + final_logits_bias
    marian  one sinusoidal table (computed as transformers does: sin in the first half, cos in
            the second), embeddings scaled by sqrt(d_model), swish (silu), no embedding norm

Both share the token embedding between encoder, decoder and (tied) LM head.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from fastattn.families.hf.spec import Architecture, Src, Task, Unsupported, activation, full, linear, table
from fastattn.models.config import Arch, Norm, NormPosition, PositionIds, Positions

FIELDS = {"vocab_size": "vocab_size", "d_model": "d_model", "num_heads": "encoder_attention_heads",
          "kv_heads": "encoder_attention_heads", "ffn_dim": "encoder_ffn_dim"}  # fmt: skip
FIXED = {"norm": Norm.LAYER, "norm_position": NormPosition.POST, "positions": Positions.LEARNED,
         "position_ids": PositionIds.SLOTS, "lm_head_bias": True, "bias": True, "norm_eps": 1e-5}  # fmt: skip
TOKENS = ("shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight")


def _common(hf) -> dict:
    if hf.encoder_attention_heads != hf.decoder_attention_heads or hf.encoder_ffn_dim != hf.decoder_ffn_dim:
        raise Unsupported("encoder and decoder with different head counts or FFN sizes")
    if getattr(hf, "normalize_before", False) or getattr(hf, "add_final_layer_norm", False):
        raise Unsupported("pre-LN layers (normalize_before / add_final_layer_norm)")
    return {"encoder_layers": full(hf.encoder_layers), "decoder_layers": full(hf.decoder_layers),
            "activation": activation(hf.activation_function),
            "embedding_scale": math.sqrt(hf.d_model) if hf.scale_embedding else 1.0,
            "tie_embeddings": bool(getattr(hf, "tie_word_embeddings", True))}  # fmt: skip


def _bart(hf) -> dict:
    return {**_common(hf), "max_positions": hf.max_position_embeddings + 2, "position_offset": 2,
            "embedding_norm": True, "per_stack_embedding": True}  # fmt: skip


def _marian(hf) -> dict:
    if not getattr(hf, "share_encoder_decoder_embeddings", True) or hf.decoder_vocab_size not in (None, hf.vocab_size):
        raise Unsupported("separate encoder and decoder vocabularies")
    return {**_common(hf), "max_positions": hf.max_position_embeddings}


def _stack(fa: str, hf: str, cross: bool) -> dict:
    layer = lambda a, b: linear(f"{fa}.layers.{{i}}.{a}", f"{hf}.layers.{{i}}.{b}")  # noqa: E731
    parts = [layer(f"self_attn.{p}_proj", f"self_attn.{p}_proj") for p in ("q", "k", "v", "out")]
    parts += [layer("self_res.norm", "self_attn_layer_norm"), layer("ffn.up_proj", "fc1"),
              layer("ffn.down_proj", "fc2"), layer("ffn_res.norm", "final_layer_norm")]  # fmt: skip
    if cross:
        parts += [layer(f"cross_attn.{p}_proj", f"encoder_attn.{p}_proj") for p in ("q", "k", "v", "out")]
        parts.append(layer("cross_res.norm", "encoder_attn_layer_norm"))
    return table(*parts)


def _heads(cfg) -> dict:
    return {"embed.tokens.weight": Src.of(*TOKENS), "decoder_embed.tokens.weight": Src.of(*TOKENS),
            "lm_head.weight": Src.of(*TOKENS) if cfg.tie_embeddings else Src.of("lm_head.weight"),
            "lm_head.bias": Src.of("final_logits_bias", fn=lambda t: t.reshape(-1), optional=True)}  # fmt: skip


def _bart_weights(cfg, _hf) -> dict:
    return table(
        _heads(cfg),
        {"embed.learned.weight": Src.of("encoder.embed_positions.weight"),
         "decoder_embed.learned.weight": Src.of("decoder.embed_positions.weight")},  # fmt: skip
        linear("embed.norm", "encoder.layernorm_embedding"),
        linear("decoder_embed.norm", "decoder.layernorm_embedding"),
        _stack("encoder", "encoder", cross=False),
        _stack("decoder", "decoder", cross=True),
    )


def sinusoidal(_hf, shape: torch.Size) -> torch.Tensor:
    """Marian's position table: sin of every even feature's angle in the first half, cos of the odd ones after."""
    n_pos, dim = shape
    angles = np.array([[pos / np.power(10000, 2 * (j // 2) / dim) for j in range(dim)] for pos in range(n_pos)])
    out = torch.empty(n_pos, dim)
    half = dim // 2 if dim % 2 == 0 else dim // 2 + 1
    out[:, :half] = torch.FloatTensor(np.sin(angles[:, 0::2]))
    out[:, half:] = torch.FloatTensor(np.cos(angles[:, 1::2]))
    return out


def _marian_weights(cfg, _hf) -> dict:
    return table(
        _heads(cfg),
        {"embed.learned.weight": Src(computed=sinusoidal)},
        _stack("encoder", "encoder", cross=False),
        _stack("decoder", "decoder", cross=True),
    )


BART = Architecture(
    name="bart", model_types=("bart",), arch=Arch.ENCODER_DECODER, tasks=(Task.TEXT2TEXT_GENERATION,),
    fields=FIELDS, fixed=FIXED, derive=_bart, weights=_bart_weights, base_prefix="model.",
)  # fmt: skip
MARIAN = Architecture(
    name="marian", model_types=("marian",), arch=Arch.ENCODER_DECODER, tasks=(Task.TEXT2TEXT_GENERATION,),
    fields=FIELDS, fixed=FIXED, derive=_marian, weights=_marian_weights, base_prefix="model.",
)  # fmt: skip

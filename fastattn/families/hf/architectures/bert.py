"""BERT and RoBERTa (and BERT-shaped sentence-embedding models): post-LN encoders with an embedding norm.

Token type 0 is folded into the position table (feature extraction takes no token types);
RoBERTa's positions count tokens, not slots, from ``padding_idx + 1`` (its table has two
extra rows), which transformers derives from pad tokens and fastattn from the mask.
"""

from __future__ import annotations

import torch

from fastattn.families.hf.spec import Architecture, Src, Task, Unsupported, activation, full, linear, table
from fastattn.models.config import Arch, Norm, NormPosition, PositionIds, Positions

FIELDS = {"vocab_size": "vocab_size", "d_model": "hidden_size", "num_heads": "num_attention_heads",
          "kv_heads": "num_attention_heads", "ffn_dim": "intermediate_size", "max_positions": "max_position_embeddings",
          "norm_eps": "layer_norm_eps"}  # fmt: skip
FIXED = {"norm": Norm.LAYER, "norm_position": NormPosition.POST, "positions": Positions.LEARNED,
         "embedding_norm": True, "bias": True}  # fmt: skip


def _derive(hf) -> dict:
    if getattr(hf, "position_embedding_type", "absolute") != "absolute":
        raise Unsupported(f"position_embedding_type {hf.position_embedding_type!r} (fastattn has absolute)")
    if getattr(hf, "is_decoder", False) or getattr(hf, "add_cross_attention", False):
        raise Unsupported("a BERT used as a decoder (is_decoder / add_cross_attention)")
    return {"encoder_layers": full(hf.num_hidden_layers), "activation": activation(hf.hidden_act)}


def _derive_roberta(hf) -> dict:
    return {**_derive(hf), "position_offset": hf.pad_token_id + 1, "position_ids": PositionIds.TOKENS}


def _weights(_cfg, hf) -> dict:
    layer = lambda fa, name: linear(f"encoder.layers.{{i}}.{fa}", f"encoder.layer.{{i}}.{name}")  # noqa: E731
    return table(
        {"embed.tokens.weight": Src.of("embeddings.word_embeddings.weight"),
         "embed.learned.weight": Src.combine(lambda pos, types: pos + types[0], "embeddings.position_embeddings.weight",
                                             "embeddings.token_type_embeddings.weight")},  # fmt: skip
        linear("embed.norm", "embeddings.LayerNorm"),
        layer("self_attn.q_proj", "attention.self.query"),
        layer("self_attn.k_proj", "attention.self.key"),
        layer("self_attn.v_proj", "attention.self.value"),
        layer("self_attn.out_proj", "attention.output.dense"),
        layer("self_res.norm", "attention.output.LayerNorm"),
        layer("ffn.up_proj", "intermediate.dense"),
        layer("ffn.down_proj", "output.dense"),
        layer("ffn_res.norm", "output.LayerNorm"),
    )


def _roberta_positions(hf, mask: torch.Tensor) -> torch.Tensor:
    """What transformers computes from pad tokens (``cumsum(not pad) * not pad + padding_idx``), from the mask."""
    mask = mask.long()
    return mask.cumsum(-1) * mask + hf.pad_token_id


BERT = Architecture(
    name="bert", model_types=("bert",), arch=Arch.ENCODER, tasks=(Task.FEATURE_EXTRACTION,),
    fields=FIELDS, fixed=FIXED, derive=_derive, weights=_weights, base_prefix="bert.",
    note="the pooler and task heads are not exported (feature extraction returns last_hidden_state)",
)  # fmt: skip

ROBERTA = Architecture(
    name="roberta", model_types=("roberta", "xlm-roberta", "camembert"), arch=Arch.ENCODER,
    tasks=(Task.FEATURE_EXTRACTION,), fields=FIELDS, fixed=FIXED, derive=_derive_roberta, weights=_weights,
    base_prefix="roberta.", position_ids=_roberta_positions,
    note="the pooler and task heads are not exported (feature extraction returns last_hidden_state)",
)  # fmt: skip

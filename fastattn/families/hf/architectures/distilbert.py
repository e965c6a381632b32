"""DistilBERT: BERT's post-LN encoder without token types, under other names."""

from __future__ import annotations

from fastattn.families.hf.spec import Architecture, Src, Task, activation, full, linear, table
from fastattn.models.config import Arch, Norm, NormPosition, Positions


def _derive(hf) -> dict:
    return {"encoder_layers": full(hf.n_layers), "activation": activation(hf.activation)}


def _weights(_cfg, _hf) -> dict:
    layer = lambda fa, name: linear(f"encoder.layers.{{i}}.{fa}", f"transformer.layer.{{i}}.{name}")  # noqa: E731
    return table(
        {"embed.tokens.weight": Src.of("embeddings.word_embeddings.weight"),
         "embed.learned.weight": Src.of("embeddings.position_embeddings.weight")},  # fmt: skip
        linear("embed.norm", "embeddings.LayerNorm"),
        layer("self_attn.q_proj", "attention.q_lin"),
        layer("self_attn.k_proj", "attention.k_lin"),
        layer("self_attn.v_proj", "attention.v_lin"),
        layer("self_attn.out_proj", "attention.out_lin"),
        layer("self_res.norm", "sa_layer_norm"),
        layer("ffn.up_proj", "ffn.lin1"),
        layer("ffn.down_proj", "ffn.lin2"),
        layer("ffn_res.norm", "output_layer_norm"),
    )


DISTILBERT = Architecture(
    name="distilbert", model_types=("distilbert",), arch=Arch.ENCODER, tasks=(Task.FEATURE_EXTRACTION,),
    fields={"vocab_size": "vocab_size", "d_model": "dim", "num_heads": "n_heads", "kv_heads": "n_heads",
            "ffn_dim": "hidden_dim", "max_positions": "max_position_embeddings"},
    fixed={"norm": Norm.LAYER, "norm_position": NormPosition.POST, "positions": Positions.LEARNED,
           "embedding_norm": True, "bias": True, "norm_eps": 1e-12},
    derive=_derive, weights=_weights, base_prefix="distilbert.",
    note="task heads are not exported (feature extraction returns last_hidden_state)",
)  # fmt: skip

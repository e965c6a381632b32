"""GPT-2: a pre-LN decoder with learned positions, the tanh GELU and Conv1D projections.

Conv1D stores weights (in, out), transposed against ``nn.Linear``; the packed ``c_attn``
projection splits into queries, keys and values along its output axis.
"""

from __future__ import annotations

from fastattn.families.hf.spec import Architecture, Src, Task, Unsupported, activation, full, linear, table
from fastattn.models.config import Arch, Norm, NormPosition, Positions


def _derive(hf) -> dict:
    if getattr(hf, "scale_attn_by_inverse_layer_idx", False):
        raise Unsupported("scale_attn_by_inverse_layer_idx (a per-layer score scale)")
    if getattr(hf, "add_cross_attention", False):
        raise Unsupported("add_cross_attention")
    return {"decoder_layers": full(hf.n_layer), "activation": activation(hf.activation_function),
            "ffn_dim": hf.n_inner or 4 * hf.n_embd,
            "tie_embeddings": bool(getattr(hf, "tie_word_embeddings", True))}  # fmt: skip


def _part(index: int, d: int):
    """Rows ``index`` of the transposed packed projection: q, k or v."""
    return lambda t: (t.t() if t.dim() == 2 else t)[index * d : (index + 1) * d]


def _weights(cfg, hf) -> dict:
    d = cfg.d_model
    attn = "decoder.layers.{i}.self_attn"
    conv = lambda fa, name: {f"{fa}.weight": Src.of(f"h.{{i}}.{name}.weight", fn=lambda t: t.t()),  # noqa: E731
                             f"{fa}.bias": Src.of(f"h.{{i}}.{name}.bias")}  # fmt: skip
    head = "wte.weight" if cfg.tie_embeddings else "lm_head.weight"
    return table(
        {"embed.tokens.weight": Src.of("wte.weight"), "embed.learned.weight": Src.of("wpe.weight"),
         "lm_head.weight": Src.of(head)},  # fmt: skip
        {f"{attn}.{p}_proj.{kind}": Src.of(f"h.{{i}}.attn.c_attn.{kind}", fn=_part(n, d))
         for n, p in enumerate("qkv") for kind in ("weight", "bias")},  # fmt: skip
        conv(f"{attn}.out_proj", "attn.c_proj"),
        conv("decoder.layers.{i}.ffn.up_proj", "mlp.c_fc"),
        conv("decoder.layers.{i}.ffn.down_proj", "mlp.c_proj"),
        linear("decoder.layers.{i}.self_res.norm", "h.{i}.ln_1"),
        linear("decoder.layers.{i}.ffn_res.norm", "h.{i}.ln_2"),
        linear("decoder.final_norm", "ln_f"),
    )


GPT2 = Architecture(
    name="gpt2", model_types=("gpt2",), arch=Arch.DECODER, tasks=(Task.TEXT_GENERATION,),
    fields={"vocab_size": "vocab_size", "d_model": "n_embd", "num_heads": "n_head", "kv_heads": "n_head",
            "max_positions": "n_positions", "norm_eps": "layer_norm_epsilon"},
    fixed={"norm": Norm.LAYER, "norm_position": NormPosition.PRE, "positions": Positions.LEARNED, "bias": True},
    derive=_derive, weights=_weights, base_prefix="transformer.",
)  # fmt: skip

"""Llama, Mistral and Qwen2: pre-RMSNorm decoders with rotary positions, SwiGLU and grouped-query attention.

They differ in attention windows and biases:

    llama    every layer full; q/k/v/o biases if attention_bias, FFN biases if mlp_bias;
             rope_scaling default, linear or llama3
    mistral  every layer a sliding window of sliding_window keys (full when it is null)
    qwen2    q/k/v biases, no others; layer i slides when layer_types[i] is "sliding_attention"
             (transformers derives layer_types from use_sliding_window and max_window_layers)
"""

from __future__ import annotations

from fastattn.families.hf.spec import Architecture, Src, Task, Unsupported, full, linear, sliding, table
from fastattn.models.config import (
    Activation,
    Arch,
    LayerAttention,
    Norm,
    NormPosition,
    Positions,
    RopeKind,
    RopeScaling,
)

FIELDS = {"vocab_size": "vocab_size", "d_model": "hidden_size", "num_heads": "num_attention_heads",
          "kv_heads": "num_key_value_heads", "ffn_dim": "intermediate_size", "norm_eps": "rms_norm_eps",
          "rope_theta": "rope_theta", "max_positions": "max_position_embeddings"}  # fmt: skip
FIXED = {"norm": Norm.RMS, "norm_position": NormPosition.PRE, "positions": Positions.ROTARY,
         "activation": Activation.SWIGLU}  # fmt: skip


def _common(hf) -> dict:
    if hf.hidden_act != "silu":
        raise Unsupported(f"hidden_act {hf.hidden_act!r} in a gated FFN (fastattn gates with silu)")
    head_dim = getattr(hf, "head_dim", None)
    if head_dim is not None and head_dim * hf.num_attention_heads != hf.hidden_size:
        raise Unsupported(f"head_dim {head_dim} x {hf.num_attention_heads} heads != hidden_size {hf.hidden_size}")
    if getattr(hf, "pretraining_tp", 1) != 1:
        raise Unsupported(f"pretraining_tp {hf.pretraining_tp}")
    rope = getattr(hf, "rope_parameters", None) or {}  # transformers 5 writes rope_theta and the scaling here
    theta = rope.get("rope_theta", hf.rope_theta)
    return {"tie_embeddings": bool(getattr(hf, "tie_word_embeddings", False)), "rope_scaling": _rope(hf),
            "rope_theta": float(theta)}  # fmt: skip


def _rope(hf) -> RopeScaling | None:
    parameters = getattr(hf, "rope_parameters", None)
    scaling = getattr(hf, "rope_scaling", None) or (parameters if isinstance(parameters, dict) else None)
    kind = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))
    if scaling is None or kind == "default":
        return None
    if kind == "linear":
        return RopeScaling(RopeKind.LINEAR, float(scaling["factor"]))
    if kind == "llama3":
        return RopeScaling(RopeKind.LLAMA3, float(scaling["factor"]), float(scaling["low_freq_factor"]),
                           float(scaling["high_freq_factor"]), int(scaling["original_max_position_embeddings"]))  # fmt: skip
    raise Unsupported(f"rope_scaling {kind!r} (fastattn has default, linear and llama3)")


def _llama(hf) -> dict:
    attention, mlp = bool(getattr(hf, "attention_bias", False)), bool(getattr(hf, "mlp_bias", False))
    return {**_common(hf), "decoder_layers": full(hf.num_hidden_layers), "bias": False, "qkv_bias": attention,
            "out_bias": attention, "ffn_bias": mlp}  # fmt: skip


def _mistral(hf) -> dict:
    window = getattr(hf, "sliding_window", None)
    layer = sliding(window) if window else LayerAttention()
    return {**_common(hf), "decoder_layers": (layer,) * hf.num_hidden_layers, "bias": False}


def _qwen2(hf) -> dict:
    kinds = {"full_attention": LayerAttention()}
    if hf.sliding_window:
        kinds["sliding_attention"] = sliding(hf.sliding_window)
    unknown = sorted(set(hf.layer_types) - set(kinds))
    if unknown:
        raise Unsupported(f"layer_types {unknown}")
    return {**_common(hf), "decoder_layers": tuple(kinds[k] for k in hf.layer_types), "bias": False, "qkv_bias": True}


def _weights(cfg, _hf) -> dict:
    layer = lambda fa, name: linear(f"decoder.layers.{{i}}.{fa}", f"layers.{{i}}.{name}")  # noqa: E731
    return table(
        {"embed.tokens.weight": Src.of("embed_tokens.weight"),
         "lm_head.weight": Src.of("embed_tokens.weight" if cfg.tie_embeddings else "lm_head.weight")},  # fmt: skip
        layer("self_attn.q_proj", "self_attn.q_proj"),
        layer("self_attn.k_proj", "self_attn.k_proj"),
        layer("self_attn.v_proj", "self_attn.v_proj"),
        layer("self_attn.out_proj", "self_attn.o_proj"),
        layer("self_res.norm", "input_layernorm"),
        layer("ffn.gate_proj", "mlp.gate_proj"),
        layer("ffn.up_proj", "mlp.up_proj"),
        layer("ffn.down_proj", "mlp.down_proj"),
        layer("ffn_res.norm", "post_attention_layernorm"),
        linear("decoder.final_norm", "norm"),
    )


def _family(name: str, derive) -> Architecture:
    return Architecture(name=name, model_types=(name,), arch=Arch.DECODER, tasks=(Task.TEXT_GENERATION,), fields=FIELDS,
                  fixed=FIXED, derive=derive, weights=_weights, base_prefix="model.")  # fmt: skip


LLAMA = _family("llama", _llama)
MISTRAL = _family("mistral", _mistral)
QWEN2 = _family("qwen2", _qwen2)

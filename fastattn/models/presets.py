"""Named model configurations; ``default`` is the built-in demo model."""

from __future__ import annotations

from fastattn.models.config import (
    Activation,
    LayerAttention,
    ModelConfig,
    Norm,
    NormPosition,
    Pattern,
    Positions,
)

FULL = LayerAttention()


def sliding(window: int) -> LayerAttention:
    return LayerAttention(Pattern.SLIDING, window=window)


def global_local(global_tokens: int, window: int) -> LayerAttention:
    return LayerAttention(Pattern.GLOBAL_LOCAL, window=window, global_tokens=global_tokens)


PRESETS: dict[str, ModelConfig] = {
    # Mistral/Gemma-style byte-level LM: GQA, RMSNorm, SwiGLU, rotary, 3 sliding layers per full one.
    "default": ModelConfig(
        name="default",
        vocab_size=256,
        d_model=256,
        num_heads=8,
        kv_heads=2,
        ffn_dim=768,
        decoder_layers=(sliding(64), sliding(64), sliding(64), FULL),
        norm=Norm.RMS,
        positions=Positions.ROTARY,
        activation=Activation.SWIGLU,
    ),
    # Longformer-style encoder classifier: global+local attention, post-LN, learned positions.
    "encoder": ModelConfig(
        name="encoder",
        vocab_size=256,
        d_model=128,
        num_heads=4,
        kv_heads=4,
        ffn_dim=512,
        encoder_layers=(global_local(4, 32), global_local(4, 32), FULL),
        norm_position=NormPosition.POST,
        positions=Positions.LEARNED,
        max_positions=1024,
        num_labels=2,
    ),
    # The classic nn.Transformer shape, post-LN, with a sliding-window decoder layer and MQA.
    "seq2seq": ModelConfig(
        name="seq2seq",
        vocab_size=256,
        d_model=128,
        num_heads=4,
        kv_heads=1,
        ffn_dim=512,
        encoder_layers=(FULL, sliding(32)),
        decoder_layers=(sliding(32), FULL),
        norm_position=NormPosition.POST,
        positions=Positions.LEARNED,
        activation=Activation.RELU,
    ),
}


def preset(name: str) -> ModelConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; available: {', '.join(PRESETS)}") from None

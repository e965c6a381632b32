"""The ModelConfig fields Hugging Face families need: round trip, defaults that leave old models unchanged,
and rotary scalings equal to transformers' own inverse frequencies."""

from __future__ import annotations

import pytest
import torch

from fastattn.models import LayerAttention, ModelConfig, build
from fastattn.models.config import Activation, PositionIds, Positions, RopeKind, RopeScaling
from fastattn.models.rope import inverse_frequencies

HF_LIKE = ModelConfig(
    vocab_size=50, d_model=32, num_heads=4, kv_heads=4, ffn_dim=64, encoder_layers=(LayerAttention(),),
    decoder_layers=(LayerAttention(),), positions=Positions.LEARNED, max_positions=40, position_offset=2,
    position_ids=PositionIds.SLOTS, embedding_norm=True, embedding_scale=2.0, per_stack_embedding=True,
    lm_head_bias=True, activation=Activation.GELU_TANH, qkv_bias=True, out_bias=False, ffn_bias=False,
)  # fmt: skip


def test_round_trip_and_old_dicts():
    assert ModelConfig.from_dict(HF_LIKE.to_dict()) == HF_LIKE
    rotary = ModelConfig(d_model=32, decoder_layers=(LayerAttention(),), rope_scaling=RopeScaling(RopeKind.LLAMA3, 8.0))
    assert ModelConfig.from_dict(rotary.to_dict()) == rotary
    old = {k: v for k, v in ModelConfig(decoder_layers=(LayerAttention(),)).to_dict().items()
           if k not in ("qkv_bias", "out_bias", "ffn_bias", "embedding_norm", "embedding_scale", "position_offset",
                        "position_ids", "per_stack_embedding", "lm_head_bias", "rope_scaling")}  # fmt: skip
    assert ModelConfig.from_dict(old).biases == (True, True, True)  # a config written before the fields existed


def test_new_modules_appear_only_when_asked():
    keys = set(build(HF_LIKE).state_dict())
    assert {"embed.norm.weight", "decoder_embed.learned.weight", "decoder_embed.norm.bias", "lm_head.bias"} <= keys
    assert "encoder.layers.0.self_attn.out_proj.bias" not in keys and "encoder.layers.0.self_attn.q_proj.bias" in keys
    plain = set(build(ModelConfig(d_model=32, encoder_layers=(LayerAttention(),), decoder_layers=(LayerAttention(),)))
                .state_dict())  # fmt: skip
    assert not any(k.startswith("decoder_embed") or k.startswith("embed.norm") for k in plain)
    assert HF_LIKE.position_limit == 38
    with pytest.raises(ValueError, match="position_offset"):
        HF_LIKE.replace(position_offset=40)


@pytest.mark.parametrize("scaling", [
    {"rope_type": "linear", "factor": 4.0},
    {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
     "original_max_position_embeddings": 64},
])  # fmt: skip
def test_rope_scaling_matches_transformers(scaling):
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from fastattn.families.hf.architectures.llama import _rope

    config = LlamaConfig(hidden_size=64, num_attention_heads=4, rope_scaling=scaling, max_position_embeddings=512)
    want, factor = ROPE_INIT_FUNCTIONS[scaling["rope_type"]](config, "cpu")
    got = inverse_frequencies(16, config.rope_theta, _rope(config))
    assert factor == 1.0 and torch.equal(got, want)

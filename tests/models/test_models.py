"""The PyTorch model family: configs, caches, padding, checkpoints."""

from __future__ import annotations

import pytest
import torch

from fastattn.models import PRESETS, LayerAttention, ModelConfig, build, load, preset, save
from fastattn.models.config import Activation, Norm, NormPosition, Pattern, Positions

SLIDING, GLOBAL = LayerAttention.parse("sliding:4"), LayerAttention.parse("global_local:2:4")
FULL = LayerAttention()


def tiny(**changes) -> ModelConfig:
    base = dict(vocab_size=50, d_model=32, num_heads=4, kv_heads=2, ffn_dim=64, max_positions=128)
    return ModelConfig(**{**base, **changes})


DECODERS = {
    "gqa-rotary-swiglu-rms": tiny(decoder_layers=(SLIDING, GLOBAL, FULL), norm=Norm.RMS, activation=Activation.SWIGLU),
    "mqa-learned-postln": tiny(kv_heads=1, decoder_layers=(SLIDING, FULL), positions=Positions.LEARNED,
                               norm_position=NormPosition.POST),
    "mha-window-longer-than-text": tiny(kv_heads=4, decoder_layers=(LayerAttention.parse("sliding:64"),)),
}  # fmt: skip


@pytest.mark.parametrize("name", PRESETS)
def test_config_round_trip(name):
    cfg = preset(name)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("text", ["sliding", "sliding:x", "global_local:4", "dense", "full:3"])
def test_bad_pattern(text):
    with pytest.raises(ValueError, match="bad attention pattern"):
        LayerAttention.parse(text)


@pytest.mark.parametrize(
    "changes, message",
    [({"decoder_layers": ()}, "needs encoder_layers"), ({"d_model": 30, "decoder_layers": (FULL,)}, "divisible"),
     ({"kv_heads": 3, "decoder_layers": (FULL,)}, "must divide")],
)  # fmt: skip
def test_bad_config(changes, message):
    with pytest.raises(ValueError, match=message):
        tiny(**changes)


def test_pattern_needs_its_parameters():
    with pytest.raises(ValueError, match="needs window"):
        LayerAttention(Pattern.SLIDING)


@pytest.mark.parametrize("name", DECODERS)
def test_decoding_with_cache_equals_one_pass(name):
    """Prefill 10 tokens then decode 14 one by one (well past the window of 4) = one forward pass."""
    model = build(DECODERS[name])
    ids = torch.randint(0, 50, (2, 24))
    with torch.no_grad():
        full, _ = model(ids)
        logits, past = model(ids[:, :10])
        steps = [logits]
        for t in range(10, 24):
            logits, past = model(ids[:, t : t + 1], past=past)
            steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=2e-5, rtol=1e-4)
    # windowed layers keep their global and last W-1 positions, full layers all 24
    kept = [min(24, layer.self_attn.spec.cache_limit or 24) for layer in model.decoder.layers]
    assert [p[0].shape for p in past] == [(2, model.config.kv_heads, n, model.config.head_size) for n in kept]


def test_left_padding_gives_the_same_logits_as_no_padding():
    """Positions come from the mask: a left-padded row matches the same tokens run alone.

    (Not with global tokens: they are the first G cache slots, which padding occupies.)
    """
    model = build(tiny(decoder_layers=(SLIDING, FULL), norm=Norm.RMS))
    ids = torch.randint(0, 50, (1, 9))
    padded = torch.cat([torch.zeros(1, 4, dtype=torch.long), ids], 1)
    mask = torch.cat([torch.zeros(1, 4, dtype=torch.long), torch.ones(1, 9, dtype=torch.long)], 1)
    with torch.no_grad():
        alone, past_alone = model(ids)
        batched, past = model(padded, mask)
        next_alone, _ = model(ids[:, -1:], past=past_alone)
        next_batched, _ = model(ids[:, -1:], torch.cat([mask, torch.ones(1, 1, dtype=torch.long)], 1), past)
    torch.testing.assert_close(batched[:, 4:], alone, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(next_batched, next_alone, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("layers", [(FULL, FULL), (SLIDING, GLOBAL)], ids=["full", "sliding-global"])
def test_encoder_right_padding_does_not_leak(layers):
    model = build(tiny(encoder_layers=layers, num_labels=3, positions=Positions.LEARNED))
    ids = torch.randint(0, 50, (1, 12))
    mask = torch.ones(1, 12, dtype=torch.long)
    mask[:, 7:] = 0
    with torch.no_grad():
        hidden, logits = model(ids, mask)
        alone, logits_alone = model(ids[:, :7])
    torch.testing.assert_close(hidden[:, :7], alone, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(logits, logits_alone, atol=1e-5, rtol=1e-4)


def test_encoder_decoder_cached_decoding_equals_forward():
    model = build(tiny(encoder_layers=(FULL, SLIDING), decoder_layers=(SLIDING, FULL), kv_heads=1))
    src, tgt = torch.randint(0, 50, (2, 11)), torch.randint(0, 50, (2, 9))
    src_mask = torch.ones(2, 11, dtype=torch.long)
    src_mask[1, 8:] = 0
    with torch.no_grad():
        full = model(src, tgt, src_mask)
        memory_kv = model.cross_kv(model.encode(src, src_mask))
        logits, past = model.decode(tgt[:, :3], memory_kv, src_mask)
        steps = [logits]
        for t in range(3, 9):
            logits, past = model.decode(tgt[:, t : t + 1], memory_kv, src_mask, past=past)
            steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=2e-5, rtol=1e-4)


def test_checkpoint_round_trip_is_weights_only(tmp_path):
    model = build(DECODERS["gqa-rotary-swiglu-rms"], seed=3)
    path = save(model, tmp_path / "model.pt")
    payload = torch.load(path, weights_only=True)  # no code runs to read it
    assert payload["format"] == "fastattn" and payload["config"]["decoder_layers"] == ["sliding:4", "global_local:2:4", "full"]
    loaded = load(path)
    ids = torch.randint(0, 50, (1, 6))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids)[0], model(ids)[0], atol=0, rtol=0)
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temporary left behind


def test_build_is_deterministic_per_seed():
    cfg = DECODERS["mqa-learned-postln"]
    a, b, c = build(cfg, seed=1), build(cfg, seed=1), build(cfg, seed=2)
    assert torch.equal(a.lm_head.weight, b.lm_head.weight)
    assert not torch.equal(a.lm_head.weight, c.lm_head.weight)


def test_projections_without_biases():
    """bias=False (Llama-style): no bias in any attention or feed-forward projection."""
    with_bias = build(tiny(decoder_layers=(FULL,), activation=Activation.SWIGLU))
    without = build(tiny(decoder_layers=(FULL,), activation=Activation.SWIGLU, bias=False))
    biases = sum(p.numel() for n, p in with_bias.named_parameters() if n.endswith(".bias") and "norm" not in n)
    assert biases == 3 * 32 + 2 * 32 // 4 * 2 + 2 * 64  # q, o (32 each), k, v (16 each), gate, up (64 each), down
    assert sum(p.numel() for p in with_bias.parameters()) - sum(p.numel() for p in without.parameters()) == biases
    assert ModelConfig.from_dict(without.config.to_dict()) == without.config

"""Windowed layers keep only the cache a later query can read: same logits, bounded caches."""

from __future__ import annotations

import pytest
import torch

from fastattn.models import LayerAttention, ModelConfig, build
from fastattn.models.config import Positions

SLIDING, GLOBAL, FULL = (LayerAttention.parse(t) for t in ("sliding:4", "global_local:2:5", "full"))
CONFIGS = {
    "sliding+global+full": dict(decoder_layers=(SLIDING, GLOBAL, FULL)),
    "all-windowed-learned": dict(decoder_layers=(SLIDING, GLOBAL), positions=Positions.LEARNED),
    "window-1": dict(decoder_layers=(LayerAttention.parse("sliding:1"), FULL)),
}


def _model(name: str, whole: bool):
    base = dict(vocab_size=40, d_model=32, num_heads=4, kv_heads=2, ffn_dim=48, max_positions=96)
    return build(ModelConfig(**{**base, **CONFIGS[name]}), seed=3).keep_whole_caches(whole)


def _run(model, ids: torch.Tensor, mask: torch.Tensor, chunks: list[int]):
    """Feed ``ids`` in chunks through the cache; the logits of every position and the last caches."""
    past, out, start = None, [], 0
    with torch.no_grad():
        for n in chunks:
            logits, past = model(ids[:, start : start + n], mask[:, : start + n], past)
            out.append(logits)
            start += n
    return torch.cat(out, 1), past


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("chunks", [[6] + [1] * 40, [3, 5, 1, 7, 1, 1, 9, 2, 1, 1, 1, 3, 1]])
def test_trimmed_cache_gives_the_logits_of_the_whole_cache(name, chunks):
    """Left-padded rows, prefill then single tokens or chunks, running far past windows 4 and 5."""
    total = sum(chunks)
    ids = torch.randint(0, 40, (3, total), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(3, total, dtype=torch.long)
    mask[1, :2] = 0
    mask[2, :5] = 0
    trimmed, past = _run(_model(name, whole=False), ids, mask, chunks)
    whole, whole_past = _run(_model(name, whole=True), ids, mask, chunks)
    torch.testing.assert_close(trimmed, whole, atol=2e-5, rtol=1e-4)
    model = _model(name, whole=False)
    limits = [layer.self_attn.spec.cache_limit for layer in model.decoder.layers]
    assert [p[0].shape[2] for p in past] == [limit if limit else total for limit in limits]
    assert all(p[0].shape[2] == total for p in whole_past)


def test_trimmed_global_cache_keeps_the_global_positions():
    model = _model("sliding+global+full", whole=False)
    ids = torch.randint(0, 40, (1, 12))
    with torch.no_grad():
        _, past = model(ids, torch.ones_like(ids))
        _, whole = _model("sliding+global+full", whole=True)(ids, torch.ones_like(ids))
    key, full_key = past[1][0], whole[1][0]  # global_local:2:5 keeps positions 0, 1 and the last 4
    torch.testing.assert_close(key, torch.cat([full_key[:, :, :2], full_key[:, :, -4:]], 2))


def test_all_windowed_model_without_a_mask_past_the_window_is_an_error():
    model = _model("all-windowed-learned", whole=False)
    ids = torch.randint(0, 40, (1, 8))
    with torch.no_grad():
        _, past = model(ids)
        with pytest.raises(ValueError, match="pass attention_mask"):
            model(ids[:, :1], past=past)


HIER_CONFIGS = {
    "hier+sliding+full": dict(decoder_layers=(LayerAttention.parse("hierarchical:4"), SLIDING, FULL)),
    "hier-gqa-learned": dict(decoder_layers=(LayerAttention.parse("hierarchical:3"),) * 2,
                             positions=Positions.LEARNED),
}


def _hier_model(name: str, whole: bool):
    base = dict(vocab_size=40, d_model=32, num_heads=4, kv_heads=2, ffn_dim=48, max_positions=96)
    return build(ModelConfig(**{**base, **HIER_CONFIGS[name]}), seed=3).keep_whole_caches(whole)


@pytest.mark.parametrize("name", HIER_CONFIGS)
@pytest.mark.parametrize("chunks", [[6] + [1] * 40, [3, 5, 1, 7, 1, 1, 9, 2, 1, 1, 1, 3, 1]])
def test_summarized_cache_gives_the_logits_of_the_whole_cache(name, chunks):
    """Left-padded rows (whole padded blocks), prefill then tokens or chunks across many blocks."""
    total = sum(chunks)
    ids = torch.randint(0, 40, (3, total), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(3, total, dtype=torch.long)
    mask[1, :2] = 0
    mask[2, :9] = 0
    compact, past = _run(_hier_model(name, whole=False), ids, mask, chunks)
    whole, _ = _run(_hier_model(name, whole=True), ids, mask, chunks)
    torch.testing.assert_close(compact, whole, atol=2e-5, rtol=1e-4)
    prefill, _ = _run(_hier_model(name, whole=False), ids, mask, [total])  # one call: no cache at all
    torch.testing.assert_close(compact, prefill, atol=2e-5, rtol=1e-4)
    model = _hier_model(name, whole=False)
    for p, layer in zip(past, model.decoder.layers):
        spec = layer.self_attn.spec
        want = total // spec.block + total % spec.block if spec.block else (spec.cache_limit or total)
        assert p[0].shape[2] == want


def test_summaries_are_masked_block_means():
    model = _hier_model("hier+sliding+full", whole=False)
    ids = torch.randint(0, 40, (2, 11))
    mask = torch.ones(2, 11, dtype=torch.long)
    mask[1, :6] = 0  # block 0 all padding, block 1 half
    with torch.no_grad():
        _, past = model(ids, mask)
        _, whole = _hier_model("hier+sliding+full", whole=True)(ids, mask)
    key, full_key = past[0][0], whole[0][0]  # hierarchical:4 over 11 positions: 2 summaries + 3 keys
    assert key.shape[2] == 5
    torch.testing.assert_close(key[0, :, 0], full_key[0, :, 0:4].mean(1))
    torch.testing.assert_close(key[1, :, 1], full_key[1, :, 6:8].mean(1))
    assert torch.equal(key[1, :, 0], torch.zeros_like(key[1, :, 0]))
    torch.testing.assert_close(key[:, :, 2:], full_key[:, :, 8:])


def test_hierarchical_cache_without_a_mask_is_an_error():
    model = _hier_model("hier+sliding+full", whole=False)
    ids = torch.randint(0, 40, (1, 8))
    with torch.no_grad():
        _, past = model(ids)
        with pytest.raises(ValueError, match="pass attention_mask"):
            model(ids[:, :1], past=past)

"""The trainer's pieces: the attention op's backward pass, the schedule, options."""

from __future__ import annotations

import pytest
import torch

from fastattn.attention.op import attention
from fastattn.attention.spec import AttentionSpec
from fastattn.errors import InputError
from fastattn.models import LayerAttention, ModelConfig
from fastattn.models.config import NormPosition
from fastattn.train.trainer import Schedule, TrainOptions, register_attention_autograd


def naive_attention(q, k, v, spec: AttentionSpec, past_len: int):
    """Dense softmax attention over packed (B, S, H*D) projections, written out longhand."""
    B, S, _ = q.shape
    L = k.shape[1]
    H, Hkv = spec.num_heads, spec.kv_num_heads
    q = q.view(B, S, H, -1).transpose(1, 2)
    k = k.view(B, L, Hkv, -1).transpose(1, 2).repeat_interleave(H // Hkv, 1)
    v = v.view(B, L, Hkv, -1).transpose(1, 2).repeat_interleave(H // Hkv, 1)
    i = torch.arange(past_len, past_len + S)[:, None]
    j = torch.arange(L)[None, :]
    ok = (j <= i) if spec.causal else torch.ones(S, L, dtype=torch.bool)
    if spec.window:
        near = (i - j).abs() < spec.window
        if spec.global_tokens:
            near |= (j < spec.global_tokens) | (i < spec.global_tokens)
        ok &= near
    scores = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
    out = scores.masked_fill(~ok, float("-inf")).softmax(-1) @ v
    return out.transpose(1, 2).reshape(B, S, -1)


@pytest.mark.parametrize(
    "spec, S, P",
    [
        (AttentionSpec(4, 2, causal=True), 12, 0),  # GQA, SDPA path
        (AttentionSpec(4, 1, causal=True, window=4), 20, 0),  # blocked sliding window
        (AttentionSpec(4, 4, causal=False, window=3, global_tokens=2), 16, 0),  # bidirectional global+local
        (AttentionSpec(4, 2, causal=True, window=5), 3, 9),  # decoding with a cache
    ],
)
def test_attention_backward_matches_naive_attention(spec, S, P):
    register_attention_autograd()
    g = torch.Generator().manual_seed(0)
    D, B = 8, 2
    q = torch.randn(B, S, spec.num_heads * D, generator=g, dtype=torch.float64, requires_grad=True)
    k_new = torch.randn(B, S, spec.kv_num_heads * D, generator=g, dtype=torch.float64, requires_grad=True)
    v_new = torch.randn(B, S, spec.kv_num_heads * D, generator=g, dtype=torch.float64, requires_grad=True)
    past_k = torch.randn(B, spec.kv_num_heads, P, D, generator=g, dtype=torch.float64, requires_grad=True)
    past_v = torch.randn(B, spec.kv_num_heads, P, D, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(B, S, spec.num_heads * D, generator=g, dtype=torch.float64)
    leaves = [q, k_new, v_new, past_k, past_v]

    out, (present_k, _) = attention(q, k_new, v_new, spec, (past_k, past_v) if P else None)
    ((out * weight).sum() + present_k.sum()).backward()
    got = [t.grad.clone() if t.grad is not None else torch.zeros_like(t) for t in leaves]
    for t in leaves:
        t.grad = None

    flat = lambda past, new: torch.cat([past.transpose(1, 2).reshape(B, P, new.shape[-1]), new], 1)  # noqa: E731
    expected_out = naive_attention(q, flat(past_k, k_new), flat(past_v, v_new), spec, P)
    ((expected_out * weight).sum() + flat(past_k, k_new).sum()).backward()
    assert torch.allclose(out, expected_out, atol=1e-10)
    for name, a, t in zip(("query", "key", "value", "past_key", "past_value"), got, leaves):
        want = t.grad if t.grad is not None else torch.zeros_like(t)
        assert torch.allclose(a, want, atol=1e-10), name


def test_registering_twice_is_harmless():
    register_attention_autograd()
    register_attention_autograd()
    spec = AttentionSpec(2, 1, causal=True)
    q = torch.randn(1, 3, 8, dtype=torch.float64, requires_grad=True)
    k, v = torch.randn(1, 3, 4, dtype=torch.float64), torch.randn(1, 3, 4, dtype=torch.float64)
    out, _ = attention(q, k, v, spec)
    out.sum().backward()  # one backward formula, registered once: gradients as the naive reference gives
    want = q.detach().clone().requires_grad_(True)
    naive_attention(want, k, v, spec, 0).sum().backward()
    assert torch.allclose(q.grad, want.grad, atol=1e-10)


@pytest.mark.parametrize("schedule", list(Schedule))
def test_schedule_warms_up_then_decays_to_the_floor(schedule):
    o = TrainOptions(steps=100, lr=1e-3, warmup=0.1, schedule=schedule, min_lr_ratio=0.1)  # all set: resolved
    lrs = [o.lr_at(s) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert lrs[-1] == pytest.approx(1e-4)
    assert lrs[54] == pytest.approx(5.5e-4, rel=0.02)  # halfway through the decay, both schedules


PRE = ModelConfig(d_model=32, num_heads=2, kv_heads=2, ffn_dim=64, decoder_layers=(LayerAttention(),))
POST = PRE.replace(norm_position=NormPosition.POST)


def test_options_key_ignores_threads_and_logging():
    a = TrainOptions(steps=10, threads=1, log_every=1, bf16=False)
    assert a.key(PRE) == TrainOptions(steps=10, threads=2, log_every=5, bf16=False).key(PRE)
    assert a.key(PRE) != TrainOptions(steps=11, bf16=False).key(PRE)
    assert TrainOptions().key(PRE)["bf16"] in (True, False)  # decided for this machine


def test_defaults_follow_the_norm_position():
    pre, post = TrainOptions().resolved(PRE), TrainOptions().resolved(POST)
    assert (pre.lr, pre.warmup, post.lr, post.warmup) == (2e-3, 0.05, 3e-4, 0.1)
    assert TrainOptions(lr=1e-3, warmup=0.2).resolved(POST).lr == 1e-3
    assert TrainOptions(lr=2e-3, warmup=0.05).key(PRE) == TrainOptions().key(PRE)  # defaults are keyed resolved


@pytest.mark.parametrize("bad", [{"steps": 0}, {"batch": 0}, {"lr": 0.0}])
def test_bad_options(bad):
    with pytest.raises(InputError):
        TrainOptions(**bad)


def test_backward_under_bf16_autocast_follows_float32():
    """Mixed precision hands the op bfloat16 values and float32 rotated queries/keys; the recomputed
    backward casts each gradient back to its input's dtype."""
    register_attention_autograd()
    g = torch.Generator().manual_seed(0)
    spec = AttentionSpec(4, 2, causal=True, window=8)
    q, k, v = (torch.randn(2, 24, n * 16, generator=g, requires_grad=True) for n in (4, 2, 2))
    weight = torch.randn(2, 24, 64, generator=g)
    (attention(q, k, v, spec)[0] * weight).sum().backward()
    exact = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    with torch.autocast("cpu", torch.bfloat16):
        out, _ = attention(q, k, v.to(torch.bfloat16), spec)
    (out.float() * weight).sum().backward()
    for name, a, t in zip("qkv", exact, (q, k, v)):
        assert t.grad.dtype == torch.float32
        assert torch.nn.functional.cosine_similarity(a.flatten(), t.grad.flatten(), 0) > 0.99, name

"""The PyTorch op (eager kernels: dense, blocked sliding window, reachable-keys decode) vs NumPy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastattn.attention.kernels import attend
from fastattn.attention.op import attention
from fastattn.attention.spec import AttentionSpec
from tests import numpy_reference
from tests.attention.grid import CASES, Case


def _torch(x):
    return None if x is None else torch.from_numpy(x)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_op_matches_numpy(case: Case):
    q, k, v, past, mask = case.arrays()
    spec = AttentionSpec(case.heads, case.kv_heads, case.causal, case.window, case.global_tokens)
    out, (pk, pv) = attention(_torch(q), _torch(k), _torch(v), spec,
                              None if past is None else tuple(map(_torch, past)), _torch(mask))  # fmt: skip
    want, want_k, want_v = numpy_reference.attention(
        q, k, v, *(past or (None, None)), mask, case.heads, case.kv_heads, case.causal, case.window, case.global_tokens
    )
    assert np.abs(out.numpy() - want).max() < 2e-6
    np.testing.assert_array_equal(pk.numpy(), want_k)
    np.testing.assert_array_equal(pv.numpy(), want_v)


def test_fully_masked_query_outputs_zero():
    spec = AttentionSpec(2, 2, causal=True)
    q, k, v = torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 8)
    mask = torch.tensor([[False, False, True, True]])
    out = attend(q, k, v, spec, mask)
    assert torch.equal(out[:, :, :2], torch.zeros_like(out[:, :, :2]))  # no visible key yet
    assert torch.isfinite(out).all()


def test_explicit_scale_is_used():
    q, k, v = torch.randn(1, 2, 5, 8), torch.randn(1, 2, 5, 8), torch.randn(1, 2, 5, 8)
    default = attend(q, k, v, AttentionSpec(2, 2))
    doubled_q = attend(q * 2, k, v, AttentionSpec(2, 2))
    scaled = attend(q, k, v, AttentionSpec(2, 2, scale=2 / np.sqrt(8)))
    torch.testing.assert_close(scaled, doubled_q)
    assert not torch.allclose(scaled, default)


@pytest.mark.parametrize("causal", [True, False])
def test_blocked_window_work_grows_linearly(causal: bool):
    """The sliding-window kernel never builds an S x S score matrix: count score elements."""
    sizes = []
    original = torch.nn.functional.scaled_dot_product_attention

    def counting(q, k, *args, **kwargs):
        sizes.append(q.shape[:-1].numel() * k.shape[-2])
        return original(q, k, *args, **kwargs)

    spec = AttentionSpec(2, 2, causal, window=16)
    torch.nn.functional.scaled_dot_product_attention = counting
    try:
        for S in (256, 512):
            attend(torch.randn(1, 2, S, 8), torch.randn(1, 2, S, 8), torch.randn(1, 2, S, 8), spec)
    finally:
        torch.nn.functional.scaled_dot_product_attention = original
    assert sizes[1] == 2 * sizes[0]  # O(S·W): twice the sequence, twice the scores
    assert sizes[1] < 512 * 512 * 2 / 5

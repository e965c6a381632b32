"""Hierarchical attention's PyTorch kernel vs the NumPy definition, and its cost."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from fastattn.attention.onnx_function import overload_for
from fastattn.attention.op import attention, eager
from fastattn.attention.spec import AttentionSpec
from tests.attention.hierarchical_grid import HCASES, HCase
from tests.attention.single_node import single_node_model


def _torch(x):
    return None if x is None else torch.from_numpy(x)


@pytest.mark.parametrize("case", HCASES, ids=str)
def test_kernel_matches_numpy(case: HCase):
    q, k, v, past, mask = case.arrays()
    spec = AttentionSpec(case.heads, case.kv_heads, case.causal, block=case.block)
    out, (pk, pv) = attention(_torch(q), _torch(k), _torch(v), spec,
                              None if past is None else tuple(map(_torch, past)), _torch(mask))  # fmt: skip
    want, want_k, want_v = case.reference()
    assert np.abs(out.numpy() - want).max() < 2e-6
    np.testing.assert_array_equal(pk.numpy(), want_k)
    np.testing.assert_array_equal(pv.numpy(), want_v)


def _feeds(q, k, v, past, mask):
    feeds = {"query": q, "key": k, "value": v}
    if past is not None:
        feeds.update(past_key=past[0], past_value=past[1])
    if mask is not None:
        feeds["key_mask"] = mask
    return feeds


@pytest.mark.parametrize("case", HCASES, ids=str)
def test_portable_body_matches_numpy(case: HCase):
    q, k, v, past, mask = case.arrays()
    model = single_node_model(case, has_mask=mask is not None)
    assert model.graph.node[0].overload == overload_for(past is not None, mask is not None, hierarchical=True)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    out, pk, pv = session.run(None, _feeds(q, k, v, past, mask))
    want, want_k, want_v = case.reference()
    assert np.abs(out - want).max() < 2e-6
    np.testing.assert_array_equal(pk, want_k)
    np.testing.assert_array_equal(pv, want_v)


def test_compact_past_gives_the_output_of_the_whole_past():
    whole, compact = (HCase(2, 9, 41, 4, 2, 8, True, 4, masked=True, compact=c) for c in (False, True))
    spec = AttentionSpec(4, 2, True, block=4)
    outs = []
    for case in (whole, compact):
        q, k, v, past, mask = case.arrays()
        outs.append(attention(_torch(q), _torch(k), _torch(v), spec, tuple(map(_torch, past)), _torch(mask))[0])
    assert compact.arrays()[3][0].shape[2] == 41 // 4 + 41 % 4
    torch.testing.assert_close(outs[0], outs[1], atol=2e-6, rtol=1e-5)


def test_left_padded_block_without_real_keys_has_no_summary():
    """A padded block changes nothing: the output equals that of the same keys with the block cut out."""
    spec = AttentionSpec(2, 2, True, block=4)
    q, k, v = torch.randn(1, 12, 16), torch.randn(1, 12, 16), torch.randn(1, 12, 16)
    mask = torch.ones(1, 12, dtype=torch.bool)
    mask[0, :4] = False
    padded, _ = attention(q, k, v, spec, key_mask=mask)
    cut, _ = attention(q[:, 4:], k[:, 4:], v[:, 4:], spec)
    torch.testing.assert_close(padded[:, 4:], cut, atol=1e-6, rtol=1e-5)
    assert torch.equal(padded[:, :4], torch.zeros_like(padded[:, :4]))  # padded queries see nothing


def test_gradients_are_finite_with_fully_masked_rows():
    q, k, v = (torch.randn(2, 10, n, requires_grad=True) for n in (16, 8, 8))
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, :6] = False
    out, _, _ = eager(q, k, v, None, None, mask, 2, 1, True, 0, 0, 0.0, 4)  # the kernels training differentiates
    out.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


@pytest.mark.parametrize("block", [16, 64])
def test_work_is_below_quadratic(block: int):
    """Scores per query are B own keys + one summary per block: count the matmul output elements."""
    sizes = []
    original = torch.Tensor.__matmul__

    def counting(a, b):
        result = original(a, b)
        sizes.append(result.numel())
        return result

    spec = AttentionSpec(2, 2, True, block=block)
    torch.Tensor.__matmul__ = counting
    try:
        S = 1024
        attention(torch.randn(1, S, 16), torch.randn(1, S, 16), torch.randn(1, S, 16), spec)
    finally:
        torch.Tensor.__matmul__ = original
    scores = max(sizes)
    assert scores <= 2 * S * max(block, S // block)  # (S, B) local and (S, S/B) summary scores
    assert scores < S * S / 4


@pytest.mark.parametrize("bad", [dict(block=1), dict(block=-2), dict(block=4, window=8)])
def test_invalid_specs(bad):
    with pytest.raises(ValueError):
        AttentionSpec(4, 2, True, **bad)


def test_summaries_count():
    spec = AttentionSpec(4, 2, True, block=8)
    assert spec.kind == "hierarchical"
    assert spec.summaries(100, 100) == 0  # a whole cache
    assert spec.summaries(100, 100 // 8 + 100 % 8) == 12
    with pytest.raises(ValueError, match="cannot hold"):
        spec.summaries(100, 50)

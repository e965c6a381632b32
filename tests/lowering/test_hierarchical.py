"""The hierarchical rule (own block + block summaries, standard ops) against the function body and NumPy."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from fastattn.exporter.lowering.apply import Choice, lower
from fastattn.exporter.lowering.base import AttentionSite
from fastattn.exporter.lowering.blocked_local import BLOCKED_LOCAL
from fastattn.exporter.lowering.gqa import GQA
from fastattn.exporter.lowering.hierarchical import HIERARCHICAL
from fastattn.exporter.lowering.hierarchical_attention import HIERARCHICAL_ATTENTION
from fastattn.exporter.lowering.measure import ShapeCase, feeds_for, measure
from fastattn.exporter.lowering.mha import MHA
from fastattn.exporter.lowering.onnx_attention import ONNX_ATTENTION
from tests.attention.grid import Case
from tests.attention.hierarchical_grid import HCASES, HCase
from tests.attention.single_node import single_node_model
from tests.lowering.harness import run, site_and_model

EXTRA = [
    HCase(2, 130, 0, 4, 2, 8, causal=True, block=8, masked=True),  # many blocks, a partial last one
    HCase(3, 1, 77, 4, 2, 8, causal=True, block=8, masked=True, compact=True),  # decode on a compact cache
    HCase(2, 1, 64, 4, 2, 8, causal=True, block=8, compact=True),  # the open block is empty
    HCase(2, 17, 40, 4, 4, 8, causal=True, block=8, masked=True, compact=True),  # a chunk crossing blocks
    HCase(2, 50, 0, 4, 1, 8, causal=False, block=6, masked=True),
]


def _feeds(case: HCase) -> dict[str, np.ndarray]:
    q, k, v, past, mask = case.arrays()
    feeds = {"query": q, "key": k, "value": v}
    if past is not None:
        feeds.update(past_key=past[0], past_value=past[1])
    if mask is not None:
        feeds["key_mask"] = mask
    return feeds


RULES = {"matmul": HIERARCHICAL, "attention": HIERARCHICAL_ATTENTION}


def _lowered(case: HCase, rule=HIERARCHICAL) -> ir.Model:
    model = ir.serde.deserialize_model(single_node_model(case, has_mask=case.masked))
    site = AttentionSite.from_node(next(n for n in model.graph if AttentionSite.is_attention(n)))
    assert rule.check(site)
    lower(model, {site.node.name: Choice(rule)}, {site.node.name: site})
    assert not any(AttentionSite.is_attention(n) for n in model.graph)
    return model


@pytest.mark.parametrize("rule", RULES.values(), ids=RULES.keys())
@pytest.mark.parametrize("case", HCASES + EXTRA, ids=str)
def test_matches_function_body_and_numpy(case: HCase, rule):
    inputs = _feeds(case)
    body = run(ir.serde.deserialize_model(single_node_model(case, has_mask=case.masked)), inputs)
    got = run(_lowered(case, rule), inputs)
    assert all(np.isfinite(g).all() for g in got)
    assert np.abs(got[0] - body[0]).max() < 1e-5
    assert np.abs(got[0] - case.reference()[0]).max() < 2e-6
    np.testing.assert_array_equal(got[1], body[1])
    np.testing.assert_array_equal(got[2], body[2])


def test_only_standard_ops():
    model = _lowered(HCase(2, 9, 5, 4, 2, 8, causal=True, block=4, masked=True, compact=True))
    assert {n.domain for n in model.graph} == {""}
    assert not model.functions


def test_other_rules_refuse_hierarchical_nodes():
    model = ir.serde.deserialize_model(single_node_model(HCase(1, 9, 0, 4, 2, 8, True, 4), has_mask=False))
    site = AttentionSite.from_node(next(n for n in model.graph if AttentionSite.is_attention(n)))
    for rule in (GQA, MHA, ONNX_ATTENTION, BLOCKED_LOCAL):
        match = rule.check(site)
        assert not match and "hierarchical" in match.reason


def test_refuses_other_kinds():
    site, _ = site_and_model(Case(1, 9, 0, 4, 2, 8, causal=True, window=4), has_mask=False)
    assert not HIERARCHICAL.check(site)


def test_measured_on_a_compact_cache_like_a_decoder_holds():
    """Decode timings of hierarchical sites use the cache the model keeps: summaries + the open block."""
    model = ir.serde.deserialize_model(single_node_model(HCase(1, 1, 1, 4, 2, 8, True, 8, masked=True), True))
    site = AttentionSite.from_node(next(n for n in model.graph if AttentionSite.is_attention(n)))
    feeds = feeds_for(site, ShapeCase("decode", 2, 1, past=100))
    assert feeds["past_key"].shape == (2, 2, 100 // 8 + 100 % 8, 8) and feeds["key_mask"].shape == (2, 101)
    results = measure(site, [HIERARCHICAL, HIERARCHICAL_ATTENTION], [ShapeCase("decode", 2, 1, past=100)], "cpu",
                      opset=23, repeats=1, threads=1)  # fmt: skip
    assert all(m.ms is not None and m.max_abs_error < 1e-5 for m in results), results

"""The gqa rule (com.microsoft.GroupQueryAttention) against the function body, over the grid and beyond."""

from __future__ import annotations

import onnx_ir as ir
import pytest

from fastattn.exporter.lowering.apply import Choice, lower
from fastattn.exporter.lowering.base import Builder
from fastattn.exporter.lowering.gqa import GQA
from fastattn.exporter.lowering.measure import ShapeCase, measure
from tests.attention.grid import CASES, Case
from tests.lowering.harness import (
    OUTPUT_TOL,
    Padded,
    assert_matches,
    decode_chain,
    guard_passes,
    lowered_vs_function,
    site_and_model,
)  # fmt: skip

# ---- the grid -------------------------------------------------------------------------------------

REFUSAL = {  # which word the reason must contain, per kind of case GQA cannot take
    "bidirectional": "causal",
    "global tokens": "global",
    "head size": "multiple of 8",
}


def expected_refusal(case: Case) -> str | None:
    if not case.causal:
        return REFUSAL["bidirectional"]
    if case.global_tokens:
        return REFUSAL["global tokens"]
    if case.head_size % 8:
        return REFUSAL["head size"]
    return None


@pytest.mark.parametrize("case", CASES, ids=str)
def test_grid(case: Case):
    refusal = expected_refusal(case)
    if refusal is None:
        assert_matches(GQA, case)
    else:
        match = lowered_vs_function(GQA, case)
        assert not match and refusal in match.reason, match


def test_every_refusal_kind_occurs_in_the_grid():
    assert {expected_refusal(c) for c in CASES} >= set(REFUSAL.values())


# ---- beyond the grid: caches longer than the window, padding, shapes GQA refuses at run time ------

EXTRA = [
    Padded(2, 1, 30, 4, 2, 8, causal=True, window=5),  # decode, past longer than the window
    Padded(2, 1, 30, 4, 2, 8, causal=True),
    Padded(2, 1, 3, 4, 2, 8, causal=True, window=16),  # decode, past shorter than the window
    Padded(1, 12, 30, 8, 2, 16, causal=True, window=5),  # a chunk after a cache (batch 1)
    Padded(2, 3, 30, 4, 2, 8, causal=True, window=5),  # a chunk after a cache with batch 2: fallback
    Padded(2, 40, 0, 4, 4, 8, causal=True, window=1),
    Padded(2, 1, 30, 4, 2, 8, causal=True, window=5, masked=True, padding="none"),
    Padded(2, 1, 30, 4, 2, 8, causal=True, window=5, masked=True, padding="left"),  # padded decode: fallback
    Padded(2, 1, 30, 4, 2, 8, causal=True, window=5, masked=True, padding="right"),  # fallback too
    Padded(3, 40, 0, 4, 2, 8, causal=True, window=5, masked=True, padding="right"),  # right-padded prefill
    Padded(3, 40, 0, 4, 2, 8, causal=True, window=5, masked=True, padding="left"),  # fallback
]
TAKES_GQA = {  # whether GQA itself (not the fallback) runs
    "causal-w5-b2s1p30-h4kv2": True,
    "causal-b2s1p30-h4kv2": True,
    "causal-w16-b2s1p3-h4kv2": True,
    "causal-w5-b1s12p30-h8kv2": True,
    "causal-w5-b2s3p30-h4kv2": False,
    "causal-w1-b2s40p0-h4kv4": True,
    "causal-w5-b2s1p30-h4kv2-mask-none": True,
    "causal-w5-b2s1p30-h4kv2-mask-left": False,
    "causal-w5-b2s1p30-h4kv2-mask-right": False,
    "causal-w5-b3s40p0-h4kv2-mask-right": True,
    "causal-w5-b3s40p0-h4kv2-mask-left": False,
}


@pytest.mark.parametrize("case", EXTRA, ids=str)
def test_beyond_the_grid(case: Case, monkeypatch):
    assert_matches(GQA, case)
    assert guard_passes(GQA, case, monkeypatch) is TAKES_GQA[str(case)]


@pytest.mark.parametrize("window", [0, 5])
def test_decode_after_prefill_into_an_empty_cache(window: int):
    """P = 0 is a first prompt for GQA; the presents then feed three decode steps past the window."""
    assert decode_chain(GQA, Case(2, 9, 0, 8, 2, 16, causal=True, window=window)) < OUTPUT_TOL


def test_refuses_a_symbolic_head_size():
    site, _ = site_and_model(CASES[2], has_mask=False)
    site.key.shape = ir.Shape(["B", "T", "K"])
    match = GQA.check(site)
    assert not match and "not static" in match.reason


def test_no_guard_when_shapes_prove_it_unneeded():
    """Without a mask or cache, and with one named dim for query and key lengths, GQA runs unguarded."""
    site, model = site_and_model(Case(2, 9, 0, 4, 1, 8, causal=True), has_mask=False)
    site.key.shape = ir.Shape(["B", "S", site.key.shape[2]])
    site.query.shape = ir.Shape(["B", "S", site.query.shape[2]])
    assert GQA.guard(site, Builder()) is None
    lower(model, {site.node.name: Choice(GQA)}, {site.node.name: site})
    ops = [n.op_type for n in model.graph]
    assert "If" not in ops and ops.count("GroupQueryAttention") == 1, ops


def test_measure_times_the_rule():
    site, _ = site_and_model(Case(1, 1, 1, 4, 2, 8, causal=True, window=4), has_mask=False)
    cases = [ShapeCase("prefill", 1, 16), ShapeCase("decode", 1, 1, past=16)]
    results = measure(site, [GQA], cases, "cpu", opset=20, repeats=2, threads=1)
    assert [(m.rule, m.case) for m in results] == [("gqa", "prefill"), ("gqa", "decode")]
    assert all(m.ms is not None and m.ms > 0 and m.max_abs_error < OUTPUT_TOL for m in results), results

"""The gqa rule (com.microsoft.GroupQueryAttention) against the function body, over the grid and beyond.

Also holds helpers test_mha.py uses: padding patterns beyond the grid's random mask, a probe
of which side of a rule's guard ran, and multi-step decoding through an empty cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir
import pytest

from fastattn.exporter.lowering import apply
from fastattn.exporter.lowering.apply import Choice, lower
from fastattn.exporter.lowering.base import AttentionSite, Builder, LoweringRule
from fastattn.exporter.lowering.gqa import GQA
from fastattn.exporter.lowering.measure import ShapeCase, feeds_for, measure, single_site_model
from fastattn.exporter.lowering.portable import PORTABLE
from tests.attention.grid import CASES, Case
from tests.lowering.harness import feeds, lowered_vs_function, run, site_and_model

OUTPUT_TOL, PRESENT_TOL = 1e-5, 1e-6


@dataclass(frozen=True)
class Padded(Case):
    """A grid case whose key mask follows a pattern: "none" (all ones), "right", "left" or the grid's "random"."""

    padding: str = "random"

    def __str__(self) -> str:
        return f"{super().__str__()}-{self.padding}" if self.masked else super().__str__()

    def arrays(self, seed: int = 0):
        q, k, v, past, mask = super().arrays(seed)
        if self.masked and self.padding != "random":
            mask = np.ones((self.batch, self.past + self.seq), np.int64)
            prompt = self.past or self.seq  # the padded prompt: the cache, or the new tokens of a prefill
            for row in range(self.batch):
                pad = 1 + 3 * row
                if self.padding == "right":
                    mask[row, prompt - pad : prompt] = 0
                elif self.padding == "left":
                    mask[row, :pad] = 0
        return q, k, v, past, mask


def assert_matches(rule: LoweringRule, case: Case) -> dict[str, float]:
    errors = lowered_vs_function(rule, case)
    assert isinstance(errors, dict), f"{rule.name} refused {case}: {errors.reason}"
    assert errors["output"] < OUTPUT_TOL, errors
    assert errors["present_key"] < PRESENT_TOL and errors["present_value"] < PRESENT_TOL, errors
    return errors


class MarkedPortable(LoweringRule):
    """The portable body with every output element replaced by a marker: shows when a guard fell back."""

    name = "marked-portable"
    MARK = 7.0

    def check(self, site):
        return PORTABLE.check(site)

    def rewrite(self, site: AttentionSite, b: Builder):
        output, present_key, present_value = PORTABLE.rewrite(site, b)
        return b.Add(b.Mul(output, b.const(0.0, "float32")), b.const(self.MARK, "float32")), present_key, present_value


def guard_passes(rule: LoweringRule, case: Case, monkeypatch) -> bool:
    """Whether the lowered node ran ``rule`` (True) or the portable fallback behind its guard (False)."""
    site, model = site_and_model(case, has_mask=case.masked)
    assert rule.check(site), rule.check(site).reason
    monkeypatch.setattr(apply, "PORTABLE", MarkedPortable())
    lower(model, {site.node.name: Choice(rule)}, {site.node.name: site})
    output = run(model, feeds(case))[0]
    return not np.all(output == MarkedPortable.MARK)


def decode_chain(rule: LoweringRule, case: Case, steps: int = 3) -> float:
    """Prefill ``case.seq`` tokens into an empty cache (P = 0) through a model with past inputs, then
    decode ``steps`` tokens feeding presents back; the largest output/present error against the body."""
    with_cache = Case(case.batch, 1, 1, case.heads, case.kv_heads, case.head_size, case.causal, case.window,
                      case.global_tokens)  # fmt: skip
    site, _ = site_and_model(with_cache, has_mask=False)
    portable = single_site_model(site, 20)
    lowered = single_site_model(site, 20)
    node = next(n for n in lowered.graph if AttentionSite.is_attention(n))
    lowered_site = AttentionSite.from_node(node)
    lower(lowered, {node.name: Choice(rule)}, {node.name: lowered_site})
    assert not any(AttentionSite.is_attention(n) for n in lowered.graph)
    inputs = feeds_for(site, ShapeCase("prefill", case.batch, case.seq, past=0))
    worst = 0.0
    for step in range(steps + 1):
        want, got = run(portable, inputs), run(lowered, inputs)
        worst = max([worst] + [float(np.abs(g - w).max()) for g, w in zip(got, want)])
        fresh = feeds_for(site, ShapeCase("decode", case.batch, 1, past=0), seed=step + 1)
        inputs = {"query": fresh["query"], "key": fresh["key"], "value": fresh["value"],
                  "past_key": want[1], "past_value": want[2]}  # fmt: skip
    return worst


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

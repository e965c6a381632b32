"""The mha rule (com.microsoft.MultiHeadAttention) against the function body, over the grid and beyond."""

from __future__ import annotations

import numpy as np
import pytest

from fastattn.exporter.lowering import apply
from fastattn.exporter.lowering.apply import Choice, lower
from fastattn.exporter.lowering.measure import ShapeCase, measure
from fastattn.exporter.lowering.mha import MHA
from fastattn.exporter.lowering.portable import PORTABLE
from tests import numpy_reference
from tests.attention.grid import CASES, Case
from tests.lowering.harness import (
    OUTPUT_TOL,
    Marked,
    Padded,
    assert_matches,
    decode_chain,
    guard_passes,
    run,
    site_and_model,
)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_grid(case: Case):
    """MHA takes every kind: padding as key_padding_mask, windows and global tokens as a bias."""
    assert_matches(MHA, case)


EXTRA = [
    Padded(2, 1, 30, 4, 4, 8, causal=True),  # unidirectional over a cache
    Padded(2, 12, 30, 4, 4, 8, causal=True, masked=True, padding="left"),  # a chunk, batch 2, padded
    Padded(2, 1, 30, 8, 2, 16, causal=True, window=5, masked=True, padding="right"),  # grouped heads, bias
    Padded(2, 1, 30, 4, 1, 8, causal=False, masked=True),  # bidirectional over a cache
    Padded(3, 40, 0, 4, 4, 8, causal=True, masked=True, padding="left"),  # rows that see no key
    Padded(2, 40, 0, 4, 2, 8, causal=True, window=3, global_tokens=2, masked=True, padding="right"),
]


@pytest.mark.parametrize("case", EXTRA, ids=str)
def test_beyond_the_grid(case: Case, monkeypatch):
    assert_matches(MHA, case)
    assert guard_passes(MHA, case, monkeypatch)


def test_rows_without_visible_keys_are_finite():
    case = EXTRA[4]
    _, _, _, _, mask = case.arrays()
    hidden = ~numpy_reference.visible_rows(case.batch, case.seq, case.past, mask, causal=True)
    assert hidden.sum() >= 5  # the left-padded rows' leading queries
    assert_matches(MHA, case)  # the harness asserts every output, hidden rows included, is finite


def test_causal_with_fewer_queries_than_keys_falls_back(monkeypatch):
    """unidirectional is not bottom-right aligned when T != S: the guard routes such inputs to the body."""
    case = Case(2, 3, 0, 4, 4, 8, causal=True)
    rng = np.random.default_rng(0)
    inputs = {"query": rng.standard_normal((2, 3, 32), np.float32), "key": rng.standard_normal((2, 7, 32), np.float32),
              "value": rng.standard_normal((2, 7, 32), np.float32)}  # fmt: skip

    def lowered_output():
        site, model = site_and_model(case, has_mask=False)
        lower(model, {site.node.name: Choice(MHA)}, {site.node.name: site})
        return run(model, inputs)[0]

    want = run(site_and_model(case, has_mask=False)[1], inputs)[0]
    assert np.abs(lowered_output() - want).max() < OUTPUT_TOL
    monkeypatch.setattr(apply, "PORTABLE", Marked(PORTABLE))
    assert np.all(lowered_output() == Marked.MARK)


@pytest.mark.parametrize("kv_heads", [8, 2])
@pytest.mark.parametrize("window", [0, 5])
def test_decode_after_prefill_into_an_empty_cache(kv_heads: int, window: int):
    assert decode_chain(MHA, Case(2, 9, 0, 8, kv_heads, 16, causal=True, window=window)) < OUTPUT_TOL


def test_refuses_nothing_in_the_grid():
    refused = [str(c) for c in CASES if not MHA.check(site_and_model(c, has_mask=c.masked)[0])]
    assert refused == []


def test_measure_times_the_rule():
    site, _ = site_and_model(Case(1, 8, 0, 4, 4, 8, causal=False), has_mask=False)
    results = measure(site, [MHA], [ShapeCase("encode", 2, 32)], "cpu", opset=20, repeats=2, threads=1)
    assert [(m.rule, m.case) for m in results] == [("mha", "encode")]
    assert results[0].ms is not None and results[0].ms > 0 and results[0].max_abs_error < OUTPUT_TOL, results

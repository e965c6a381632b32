"""The validation statistics and gate, on hand-made arrays."""

from __future__ import annotations

import numpy as np
import pytest

from fastattn.exporter.validate import TOLERANCES, compare, valid_positions
from fastattn.families.graphs import GraphDef
from fastattn.runtime.manifest import Fill, Precision, TensorSpec

TOL = TOLERANCES[Precision.FP32]


def test_statistics():
    want = np.array([1.0, -2.0, 4.0], np.float32)
    got = want + np.array([0.0, 1e-4, -2e-4], np.float32)
    s = compare("x", got, want, TOL)
    assert s.max_abs == pytest.approx(2e-4, rel=1e-3) and s.max_rel == pytest.approx(5e-5, rel=1e-3)
    assert s.mean_abs == pytest.approx(1e-4, rel=1e-3) and s.cosine > 0.999999
    assert s.passed  # 2e-4 <= 1e-5 + 1e-4 * 4


def test_gate_fails_beyond_tolerance_and_on_nan_or_shape():
    want = np.ones((2, 3), np.float32)
    assert not compare("x", want * 1.01, want, TOL).passed
    nan = want.copy()
    nan[0, 0] = np.nan
    assert "NaN" in compare("x", nan, want, TOL).note
    assert "shape" in compare("x", want[:1], want, TOL).note


def test_valid_positions_follow_the_mask():
    graph = GraphDef("g", None, [TensorSpec("ids", "int64", ("batch", "sequence")),
                                 TensorSpec("mask", "int64", ("batch", "past_sequence+sequence"), Fill.MASK)],
                     [])  # fmt: skip
    mask = np.array([[0, 1, 1, 1], [1, 1, 1, 1]])
    feeds = {"mask": mask}
    logits = TensorSpec("logits", "float32", ("batch", "sequence", 5))
    valid = valid_positions(graph, feeds, logits, np.zeros((2, 2, 5)))  # 2 new tokens: last 2 mask columns
    assert valid.all()
    present = TensorSpec("present", "float32", ("batch", 2, "past_sequence+sequence", 3))
    valid = valid_positions(graph, feeds, present, np.zeros((2, 2, 4, 3)))
    assert not valid[0, :, 0].any() and valid[0, :, 1:].all() and valid[1].all()
    pooled = TensorSpec("pooled", "float32", ("batch", 7))
    assert valid_positions(graph, feeds, pooled, np.zeros((2, 7))) is None

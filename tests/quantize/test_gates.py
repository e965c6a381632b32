"""Accuracy gates: which figures fail which gate, by how much, and relaxing a gate."""

from __future__ import annotations

import pytest

from fastattn.quantize import Mode
from fastattn.quantize.accuracy import Figures, Task
from fastattn.quantize.gates import Gate
from fastattn.quantize.modes import MODES

GATES = {mode: spec.gate for mode, spec in MODES.items()}

INT8 = GATES[Mode.INT8]


@pytest.mark.parametrize(("ppl", "fails"), [(10.05, False), (10.099, False), (10.11, True), (12.0, True)])
def test_lm_gate_is_relative_perplexity(ppl, fails):
    failures = INT8.failures(Task.LM, Figures(perplexity=10.0), Figures(perplexity=ppl, cosine=0.5))
    assert bool(failures) == fails  # a language model is gated on perplexity only, not on cosine
    if fails:
        assert "perplexity 10 -> " in failures[0] and "gate +1.00%" in failures[0]
    assert INT8.badness(Task.LM, Figures(perplexity=10.0), Figures(perplexity=ppl)) == pytest.approx((ppl / 10 - 1) / 0.01)


def test_encoder_gates_on_cosine_and_classifier_on_accuracy():
    base = Figures(accuracy=0.80)
    assert INT8.failures(Task.EMBEDDING, Figures(), Figures(cosine=0.9995)) == []
    assert "cosine 0.99800 < 0.999" in INT8.failures(Task.EMBEDDING, Figures(), Figures(cosine=0.998))[0]
    dropped = INT8.failures(Task.CLASSIFIER, base, Figures(accuracy=0.78, cosine=0.9999))
    assert len(dropped) == 1 and "accuracy 80.00% -> 78.00%" in dropped[0]
    assert INT8.failures(Task.CLASSIFIER, base, Figures(accuracy=0.795, cosine=0.9999)) == []
    assert INT8.badness(Task.CLASSIFIER, base, Figures(accuracy=0.78, cosine=0.9999)) == pytest.approx(2.0)


def test_default_gates_follow_the_modes():
    assert GATES[Mode.INT4].max_ppl_increase == 0.03 and GATES[Mode.FP16].max_ppl_increase == 0.001
    assert GATES[Mode.INT8].min_cosine == 0.999 == GATES[Mode.INT8_STATIC].min_cosine


def test_relaxed_changes_only_what_is_given():
    relaxed = INT8.relaxed(0.05, None, None)
    assert relaxed == Gate(0.05, INT8.min_cosine, INT8.max_accuracy_drop)
    assert relaxed.failures(Task.LM, Figures(perplexity=10.0), Figures(perplexity=10.4)) == []

"""Choosing a kernel from measured timings: per shape the fastest, a decode switch only when it pays."""

from fastattn.exporter.lowering.choose import SWITCH_COST_MS, _fastest
from fastattn.exporter.lowering.measure import ShapeCase

CASES = (ShapeCase("prefill", 1, 512), ShapeCase("decode", 1, 1, past=512))


def test_decode_gets_its_own_kernel_when_the_gain_beats_the_switch():
    timings = {"prefill": {"portable": 5.0, "mha": 1.6, "onnx-attention": 1.9},
               "decode": {"portable": 0.30, "mha": 0.20, "onnx-attention": 0.20 - 2 * SWITCH_COST_MS}}  # fmt: skip
    choice = _fastest(timings, {}, CASES)
    assert (choice.rule.name, choice.decode_rule.name) == ("mha", "onnx-attention")


def test_a_decode_gain_smaller_than_the_switch_keeps_one_kernel():
    """Measured: onnx-attention 0.065 vs mha 0.078 ms at decode, but the switched model decoded slower."""
    timings = {"prefill": {"portable": 5.66, "mha": 1.61, "onnx-attention": 1.89},
               "decode": {"portable": 0.084, "mha": 0.078, "onnx-attention": 0.065}}  # fmt: skip
    choice = _fastest(timings, {}, CASES)
    assert choice.rule.name == "mha" and choice.decode_rule is None and choice.label == "mha"


def test_rejected_rules_are_not_chosen():
    timings = {"prefill": {"portable": 5.0, "mha": 1.6}, "decode": {"portable": 0.3, "mha": 0.2}}
    assert _fastest(timings, {"mha": "wrong output"}, CASES).rule.name == "portable"

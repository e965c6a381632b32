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


def test_a_win_within_the_spread_keeps_the_static_preference():
    """Measured twice, the same model got three kernels: a candidate must beat the default by more than
    the figures move."""
    timings = {"prefill": {"portable": 5.0, "gqa": 1.62, "mha": 1.60}, "decode": {"portable": 0.3, "gqa": 0.2, "mha": 0.2}}
    spreads = {"prefill": {"portable": 0.1, "gqa": 0.02, "mha": 0.02}, "decode": {}}
    assert _fastest(timings, {}, CASES, spreads).label == "gqa"  # 0.02 ms faster, but each moves 0.02
    spreads["prefill"] = {"gqa": 0.001, "mha": 0.001}
    assert _fastest(timings, {}, CASES, spreads).label == "mha"  # now the win is beyond what they move


def test_ties_go_to_the_registry_order_whatever_the_dict_order():
    for order in (("onnx-attention", "mha", "gqa"), ("gqa", "mha", "onnx-attention")):
        timings = {case: {"portable": 9.0, **{r: 1.0 for r in order}} for case in ("prefill", "decode")}
        assert _fastest(timings, {}, CASES).label == "gqa"

"""The ordered registry of lowering rules: which rules may run on which target."""

from __future__ import annotations

from fastattn.exporter.lowering.base import LoweringRule
from fastattn.exporter.lowering.portable import PORTABLE
from fastattn.exporter.lowering.target import Target


def rules() -> list[LoweringRule]:
    """Every lowering rule, portable first (the fallback every target has)."""
    from fastattn.exporter.lowering.blocked_local import BLOCKED_LOCAL
    from fastattn.exporter.lowering.gqa import GQA
    from fastattn.exporter.lowering.mha import MHA
    from fastattn.exporter.lowering.onnx_attention import ONNX_ATTENTION

    return [PORTABLE, GQA, MHA, ONNX_ATTENTION, BLOCKED_LOCAL]


def candidates(target: Target) -> list[LoweringRule]:
    """The rules a target may use."""
    return [r for r in rules() if target.rules_of in r.targets and (target.contrib_ops or not r.contrib)]


def by_name(name: str) -> LoweringRule:
    for rule in rules():
        if rule.name == name:
            return rule
    raise KeyError(name)

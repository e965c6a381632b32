"""The ordered registry of lowering rules: which rules may run on which target."""

from __future__ import annotations

from fastattn.errors import InputError
from fastattn.exporter.lowering.base import LoweringRule
from fastattn.exporter.lowering.portable import PORTABLE
from fastattn.targets import Target


def rules() -> list[LoweringRule]:
    """Every lowering rule, portable first (the fallback every target has)."""
    from fastattn.exporter.lowering.blocked_local import BLOCKED_LOCAL
    from fastattn.exporter.lowering.blocked_matmul import BLOCKED_MATMUL
    from fastattn.exporter.lowering.gqa import GQA
    from fastattn.exporter.lowering.hierarchical import HIERARCHICAL
    from fastattn.exporter.lowering.hierarchical_attention import HIERARCHICAL_ATTENTION
    from fastattn.exporter.lowering.mha import MHA
    from fastattn.exporter.lowering.onnx_attention import ONNX_ATTENTION

    return [PORTABLE, GQA, MHA, ONNX_ATTENTION, BLOCKED_LOCAL, BLOCKED_MATMUL, HIERARCHICAL,
            HIERARCHICAL_ATTENTION]


def candidates(target: Target) -> list[LoweringRule]:
    """The rules a target may use."""
    runs = target.spec.rules_as or target
    return [r for r in rules() if runs in r.targets and (target.spec.contrib_ops or not r.contrib)]


def by_name(name: str) -> LoweringRule:
    for rule in rules():
        if rule.name == name:
            return rule
    raise InputError(f"no lowering rule {name!r}", f"use one of {', '.join(r.name for r in rules())}")


def for_target(name: str, target: Target) -> LoweringRule:
    """The rule ``name`` (``--lowering``), which must be one ``target``'s provider runs."""
    rule = by_name(name)
    if rule not in candidates(target):
        allowed = ", ".join(r.name for r in candidates(target))
        raise InputError(f"lowering rule {name!r} emits ops the {target.value} target's provider does not run",
                         f"use one of {allowed} for -t {target.value}")  # fmt: skip
    return rule

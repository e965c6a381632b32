"""``fuse``: run the registry over one graph's model, count each fusion, hold it to expectations.

For each rule of :data:`~fastattn.exporter.fusion.registry.REGISTRY`, in order:

1. skip it when it has no form for the target (contrib-only rules on a standard target)
   or is off by default (measured slower on ONNX Runtime CPU) and not asked for by name,
   recording why;
2. raise the model's default-domain opset when the rule's standard op needs a newer one
   (ONNX ``RMSNormalization`` / ``RotaryEmbedding`` are opset 23) and the graph holds no op
   whose meaning changed on the way; the raise is undone if the rule fused nothing;
3. apply it, then count the nodes of its fused form (ops the exporter already emitted
   fused count too: ``LayerNormalization``, ``Gelu``);
4. when ``expected`` asks for more than were found, ask the rule why (the best partial
   match and the reason its check failed) and record a :class:`Shortfall`.

Shortfalls raise :class:`~fastattn.errors.ExportError` naming every rule, found vs
expected and the reason, unless ``allow_shortfall``. The model is rewritten in place and
stays valid after every rule, so a raised error leaves it fused as far as it got.

Model-local functions are set aside while the rules run: no rule sees, rewrites or
inlines a ``fastattn::Attention`` body (nothing here calls onnxscript's ``optimize()``,
which inlines functions), and the nodes calling them are patterns of no rule. Rules also
run inside If/Loop bodies (lowered attention behind a guard); the nodes there keep their
kind and attributes, only their outer-scope inputs may be rewired to fused values.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Collection
from dataclasses import dataclass, field

import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass

from fastattn.errors import ExportError
from fastattn.exporter.fusion.base import FusionRule, nodes
from fastattn.exporter.fusion.registry import REGISTRY, RULE_NAMES

log = logging.getLogger(__name__)

# Default-domain ops whose meaning changed at a given opset: raising a model's opset past
# that version would silently change what they compute, so opset-raising rules do not run.
_MEANING_CHANGED = {"GridSample": 20, "DFT": 20, "GroupNormalization": 21}


@dataclass(frozen=True)
class Shortfall:
    rule: str
    found: int
    expected: int
    reason: str

    def __str__(self) -> str:
        return f"{self.rule} fused {self.found} of {self.expected} expected: {self.reason}"


@dataclass
class FusionReport:
    """What ``fuse`` did to one model.

    ``counts[rule]`` is how many nodes of the rule's fused form the model has after the
    rule ran; ``rewrites[rule]`` how many of those the rule made itself.
    """

    contrib_ops: bool
    counts: dict[str, int] = field(default_factory=dict)
    rewrites: dict[str, int] = field(default_factory=dict)
    emitted: dict[str, str] = field(default_factory=dict)  # rule -> the op it emits on this target
    skipped: dict[str, str] = field(default_factory=dict)  # rule -> why it did not run
    shortfalls: dict[str, Shortfall] = field(default_factory=dict)
    opset: int | None = None  # default-domain opset after fusion
    opset_before: int | None = None

    @property
    def notes(self) -> list[str]:
        """What a reader should know beyond the counts: skipped rules, shortfalls, a raised opset."""
        out = [f"{name}: skipped ({why})" for name, why in self.skipped.items()]
        out += [str(s) for s in self.shortfalls.values()]
        if self.opset != self.opset_before:
            out.append(f"default-domain opset raised from {self.opset_before} to {self.opset}")
        return out

    def lines(self) -> list[str]:
        """One line per rule, for reports and logs."""
        out = []
        for name in RULE_NAMES:
            if name in self.skipped:
                out.append(f"{name}: skipped ({self.skipped[name]})")
            elif name in self.counts:
                line = f"{name}: {self.counts[name]} x {self.emitted[name]} ({self.rewrites[name]} rewritten)"
                if name in self.shortfalls:
                    s = self.shortfalls[name]
                    line += f"; expected {s.expected}: {s.reason}"
                out.append(line)
        if self.opset != self.opset_before:
            out.append(f"default-domain opset raised from {self.opset_before} to {self.opset}")
        return out


def fuse(
    model: ir.Model,
    contrib_ops: bool,
    expected: dict[str, int] | None = None,
    allow_shortfall: bool = False,
    *,
    rules: Collection[str] | None = None,
) -> FusionReport:
    """Fuse ``model`` in place for a target with (``contrib_ops``) or without ONNX Runtime contrib ops.

    ``expected`` (e.g. from :func:`fastattn.families.fastattn.fusions.expected_counts`) maps rule
    names to counts; a rule that finds fewer raises :class:`ExportError` unless
    ``allow_shortfall``. Expected counts of rules that do not run on the target are ignored.
    ``rules`` names the rules to run (still in registry order), off-by-default ones
    included; a rule that consumes another's output needs that one named too. By
    default every rule runs except those ``off_by_default``.
    """
    unknown = (set(expected or {}) | set(rules or ())) - set(RULE_NAMES)
    if unknown:
        raise ValueError(f"unknown fusion rules {sorted(unknown)}; rules are {', '.join(RULE_NAMES)}")
    report = FusionReport(contrib_ops, opset=_opset(model), opset_before=_opset(model))
    with _functions_set_aside(model), _quiet_passes():
        for rule in REGISTRY:
            if rules is not None and rule.name not in rules:
                continue
            if rules is None and rule.off_by_default:
                report.skipped[rule.name] = f"off by default: {rule.off_by_default}"
                continue
            _run(rule, model, contrib_ops, (expected or {}).get(rule.name), report)
        RemoveUnusedNodesPass()(model)  # constants the fused patterns consumed (eps, exponents)
    report.opset = _opset(model)
    for line in report.lines():
        log.info("fusion: %s", line)
    if report.shortfalls and not allow_shortfall:
        raise ExportError(
            "fusion fell short: " + "; ".join(map(str, report.shortfalls.values())),
            "check that the expected counts describe this graph (expected_counts(config, graph)), "
            "or pass allow_shortfall=True to keep what did fuse",
        )
    return report


def _run(
    rule: FusionRule, model: ir.Model, contrib: bool, expected: int | None, report: FusionReport
) -> None:
    """Apply one rule and record its count, rewrites and, below ``expected``, why."""
    emits = rule.emits(contrib)
    if emits is None:
        report.skipped[rule.name] = rule.unavailable(contrib)
        return
    before = _opset(model)
    needed = rule.min_opset(contrib)
    if before is not None and needed > before:
        blocker = _opset_blocker(model, before, needed)
        if blocker:
            report.skipped[rule.name] = f"{emits} needs opset {needed}, the model is at {before}: {blocker}"
            return
        _set_opset(model, needed)
    rewrites = rule.apply(model, contrib)
    if before is not None and needed > before and not rewrites:
        _set_opset(model, before)
    count = rule.count(model)
    report.emitted[rule.name] = emits
    report.rewrites[rule.name] = rewrites
    report.counts[rule.name] = count
    if expected is not None and count < expected:
        report.shortfalls[rule.name] = Shortfall(rule.name, count, expected, rule.explain(model, contrib))
    elif expected is not None and count > expected:
        log.warning("fusion %s: %d found, %d expected", rule.name, count, expected)


def _opset(model: ir.Model) -> int | None:
    return model.opset_imports.get("", model.opset_imports.get("ai.onnx"))


def _set_opset(model: ir.Model, version: int) -> None:
    model.opset_imports.pop("ai.onnx", None)
    model.opset_imports[""] = version


def _opset_blocker(model: ir.Model, before: int, after: int) -> str:
    """Why the model's default opset cannot be raised from ``before`` to ``after`` ("" if it can)."""
    for node in nodes(model):
        changed = _MEANING_CHANGED.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        if changed is not None and before < changed <= after:
            return f"{node.op_type} changed meaning at opset {changed}"
    return ""


@contextlib.contextmanager
def _quiet_passes():
    """onnx_ir's passes log every removed node and each contrib op without a schema at INFO."""
    logger = logging.getLogger("onnx_ir.passes")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def _functions_set_aside(model: ir.Model):
    """Hide model-local functions from the rules (onnxscript applies rule sets to function bodies too)."""
    functions = dict(model.functions)
    model.functions.clear()
    try:
        yield
    finally:
        added = dict(model.functions)
        model.functions.clear()
        model.functions.update(functions)
        model.functions.update(added)

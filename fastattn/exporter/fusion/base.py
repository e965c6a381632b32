"""What a fusion rule is, and the wrapper that runs onnxscript rewrite rules as one.

A :class:`FusionRule` is a small object with a ``name`` (its key in counts and expected
counts) that

- says what it emits on each target (:meth:`FusionRule.emits`): ``contrib`` targets run
  ONNX Runtime with its ``com.microsoft`` ops, ``standard`` targets take ONNX ops only;
  ``None`` means the rule has nothing to offer that target, and :meth:`unavailable` says why;
- states the default-domain opset its standard ops need (:meth:`FusionRule.min_opset`);
- may be ``off_by_default``, with the measurement that showed it slows ONNX Runtime CPU down;
- rewrites a model in place (:meth:`FusionRule.apply`, returning the number of rewrites);
- counts the nodes of its fused form (:meth:`FusionRule.count`): the report's count is
  what the model has after the rule ran, so ops the exporter already emitted fused
  (``LayerNormalization``, ``Gelu``) count too;
- explains why the remaining candidates did not fuse (:meth:`FusionRule.explain`): for
  pattern rules, the best partial match onnxscript's :class:`MatchingTracer` finds, with
  the reason its ``check`` gave (``MatchResult().fail(...)``).

:class:`PatternFusion` adapts onnxscript ``RewriteRule`` lists (its own ``ort_fusions``
rules or ours) to that interface. Rules run on the main graph and its subgraphs; the
caller (:func:`fastattn.exporter.fusion.fuse`) sets model-local functions aside first, so
no rule reads, rewrites or inlines a ``fastattn::Attention`` body.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Sequence
from typing import ClassVar

import onnx_ir as ir
from onnxscript.rewriter import pattern

MS = "com.microsoft"


def op_id(node: ir.Node) -> str:
    """``"com.microsoft::Gelu"`` or, in the default domain, ``"Gelu"``."""
    domain = "" if node.domain in ("", "ai.onnx") else node.domain
    return f"{domain}::{node.op_type}" if domain else node.op_type


def graphs(model: ir.Model) -> Iterator[ir.Graph]:
    """The main graph and every subgraph under it (If/Loop bodies); not function bodies."""
    yield model.graph
    yield from model.graph.subgraphs()


def nodes(model: ir.Model) -> Iterator[ir.Node]:
    """Every node of the main graph and its subgraphs (not of function bodies)."""
    yield from ir.traversal.RecursiveGraphIterator(model.graph)


class FusionRule(abc.ABC):
    """One fusion: what it emits per target, how it rewrites, how it counts and explains."""

    name: ClassVar[str]
    # Non-empty: the measurement that keeps this rule out of a default run (name it in
    # ``fuse(..., rules=...)`` to run it anyway).
    off_by_default: ClassVar[str] = ""

    @abc.abstractmethod
    def emits(self, contrib: bool) -> str | None:
        """The op the fused form is, e.g. ``com.microsoft::SkipLayerNormalization``; None if unavailable."""

    def unavailable(self, contrib: bool) -> str:
        """Why the rule does not run on this target (only asked when :meth:`emits` is None)."""
        if not contrib and self.emits(True):
            return f"{self.emits(True)} is an ONNX Runtime contrib op; the target takes standard ops only"
        return f"{self.name} has no {'contrib' if contrib else 'standard'} form"

    def min_opset(self, contrib: bool) -> int:
        """The default-domain opset the emitted op needs (0: any)."""
        return 0

    @abc.abstractmethod
    def apply(self, model: ir.Model, contrib: bool) -> int:
        """Rewrite ``model`` in place; return the number of rewrites."""

    @abc.abstractmethod
    def is_fused(self, node: ir.Node) -> bool:
        """Whether ``node`` is one instance of the fused form."""

    def count(self, model: ir.Model) -> int:
        return sum(1 for node in nodes(model) if self.is_fused(node))

    @abc.abstractmethod
    def explain(self, model: ir.Model, contrib: bool) -> str:
        """Why what is left unfused did not match (best partial match and its failure reason)."""


class PatternFusion(FusionRule):
    """A fusion made of onnxscript rewrite rules (``pattern`` / ``check`` / ``rewrite``)."""

    @abc.abstractmethod
    def rewrite_rules(self, contrib: bool) -> Sequence[pattern.RewriteRule]:
        """The onnxscript rules that produce this target's fused form."""

    def _ruleset(self, contrib: bool) -> pattern.RewriteRuleSet:
        return pattern.RewriteRuleSet(list(self.rewrite_rules(contrib)))

    def apply(self, model: ir.Model, contrib: bool) -> int:
        return self._ruleset(contrib).apply_to_model(model)

    def explain(self, model: ir.Model, contrib: bool) -> str:
        tracer = pattern.MatchingTracer()
        self._ruleset(contrib).apply_to_model(model, tracer=tracer)  # with a tracer nothing is rewritten
        return describe_best_match(tracer)


def describe_best_match(tracer: pattern.MatchingTracer) -> str:
    """One line from the tracer's best partial match: how far it got and why it stopped."""
    best = None
    for rule, matches in tracer.best_matches_map.items():
        for info in matches:
            if info.status == pattern.MatchStatus.SUCCESS:
                continue
            if best is None or info.score() > best[1].score():
                best = (rule, info)
    if best is None:
        return "no node starts a partial match of the pattern"
    rule, info = best
    result = info.match_result
    why = result.reason or "graph structure differs"
    stage = "check failed" if info.status == pattern.MatchStatus.CONDITION_FAILED else "no match"
    where = ", ".join(_describe(x) for x in result.failure_nodes_and_values[:2])
    root = info.root_node
    text = (
        f"best partial match ({rule}, {len(result.nodes)} nodes, ending at {op_id(root)} "
        f"{root.name!r}): {stage}: {why}"
    )
    return f"{text} [at {where}]" if where else text


def _describe(x: ir.Node | ir.Value) -> str:
    if isinstance(x, ir.Node):
        return f"{op_id(x)} {x.name!r}"
    return f"value {x.name!r}"

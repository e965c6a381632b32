"""Apply a lowering plan: replace each ``fastattn::Attention`` node by its chosen kernel.

A :class:`Choice` names the rule for a node, and optionally a second rule for decoding
(one query token). Where the two differ the node becomes ``If(sequence == 1, decode,
prefill)``; where a rule is exact only under a runtime guard it becomes ``If(guard, rule,
portable)``. Both keep every input exact. Function bodies no longer called are removed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx_ir as ir
from onnx_ir.passes.common import NameFixPass, RemoveUnusedFunctionsPass, RemoveUnusedOpsetsPass

from fastattn.exporter.lowering.base import AttentionSite, Builder, LoweringRule
from fastattn.exporter.lowering.graph_ops import take_over
from fastattn.exporter.lowering.portable import PORTABLE


@dataclass
class Choice:
    """The kernel of one attention node, and why (candidate timings in ms, reasons for rejections)."""

    rule: LoweringRule
    decode_rule: LoweringRule | None = None
    timings: dict[str, dict[str, float]] = field(default_factory=dict)  # case -> rule -> ms
    rejected: dict[str, str] = field(default_factory=dict)  # rule -> reason
    # False: the rule runs without its runtime guard (the export promises inputs it is exact for)
    guarded: bool = True
    spreads: dict[str, dict[str, float]] = field(default_factory=dict)  # case -> rule -> ms the timing moves

    @property
    def label(self) -> str:
        if self.decode_rule is None or self.decode_rule.name == self.rule.name:
            return self.rule.name
        return f"{self.rule.name} | decode: {self.decode_rule.name}"


def lower(model: ir.Model, plan: dict[str, Choice], sites: dict[str, AttentionSite]) -> dict[str, int]:
    """Rewrite the planned sites of ``model`` in place; returns how many nodes each rule took."""
    counts: dict[str, int] = {}
    for name, choice in plan.items():
        site = sites[name]
        for rule in {choice.rule, choice.decode_rule or choice.rule}:
            counts[rule.name] = counts.get(rule.name, 0) + 1
        if choice.rule is PORTABLE and choice.decode_rule in (None, PORTABLE):
            continue
        b = Builder()
        outputs = _emit_choice(choice, site, b)
        graph = site.node.graph
        graph.insert_before(site.node, b.nodes)
        for old, new in zip(site.node.outputs, outputs):
            if new is not None:
                take_over(old, new)
        graph.remove(site.node, safe=True)
    needed = max((r.min_opset for c in plan.values() for r in (c.rule, c.decode_rule) if r), default=0)
    if needed > model.opset_imports.get("", 0):
        model.opset_imports[""] = needed
        for fn in model.functions.values():
            fn.opset_imports[""] = needed
    RemoveUnusedFunctionsPass()(model)
    RemoveUnusedOpsetsPass()(model)
    NameFixPass()(model)  # builders name values val_0.. independently: make names unique
    return counts


def _emit_choice(choice: Choice, site: AttentionSite, b: Builder) -> list[ir.Value | None]:
    decode = choice.decode_rule
    if not choice.guarded:
        return _outputs(site, choice.rule.rewrite(site, b))
    if decode is None or decode.name == choice.rule.name:
        return _emit_guarded(choice.rule, site, b)
    seq = b.Shape(site.query, start=1, end=2)
    is_decode = b.Squeeze(b.Equal(seq, b.ints(1)), b.ints(0))
    return _branch(site, b, is_decode, lambda sub: _emit_guarded(decode, site, sub),
                   lambda sub: _emit_guarded(choice.rule, site, sub))  # fmt: skip


def _emit_guarded(rule: LoweringRule, site: AttentionSite, b: Builder) -> list[ir.Value | None]:
    guard = rule.guard(site, b)
    if guard is None:
        return _outputs(site, rule.rewrite(site, b))
    return _branch(site, b, guard, lambda sub: _outputs(site, rule.rewrite(site, sub)),
                   lambda sub: _outputs(site, PORTABLE.rewrite(site, sub)))  # fmt: skip


def _outputs(site: AttentionSite, outs) -> list[ir.Value | None]:
    outs = list(outs)
    if site.presents_used and (outs[1] is None or outs[2] is None):
        raise RuntimeError(f"lowering of {site.layer} returned no present key/value, which the graph uses")
    return outs if site.presents_used else [outs[0], None, None]


def _branch(site: AttentionSite, b: Builder, condition: ir.Value, then, otherwise) -> list[ir.Value | None]:
    """``If(condition, then, otherwise)``; each branch builds its outputs into its own subgraph."""
    branches = []
    for name, build in (("then", then), ("else", otherwise)):
        sub = Builder()
        outs = [o for o in build(sub) if o is not None]
        branches.append(ir.Graph([], outs, nodes=sub.nodes, name=f"{site.node.name}_{name}"))
    count = len(branches[0].outputs)
    results = b.If(condition, then_branch=branches[0], else_branch=branches[1], _outputs=count)
    results = [results] if count == 1 else list(results)
    return results + [None] * (3 - count)

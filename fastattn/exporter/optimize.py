"""Optimize a captured graph for a target: lower each attention node, then fuse the rest.

    plan (measure candidates per node) -> lower (rewrite nodes) -> fuse (norms, GELU, QKV, ...)

The result says, per attention layer, which kernel it got, the candidates' timings and
why the others were refused, and how many nodes each fusion took.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import onnx_ir as ir
from onnx_ir.passes.common import InlinePass, RemoveUnusedFunctionsPass, RemoveUnusedOpsetsPass

from fastattn.exporter.lowering.apply import Choice, lower
from fastattn.exporter.lowering.choose import LoweringOptions, plan
from fastattn.exporter.lowering.gqa_rotary import fold_rotary
from fastattn.exporter.lowering.target import Target
from fastattn.runtime.manifest import AttentionLayer

log = logging.getLogger(__name__)


@dataclass
class OptimizeResult:
    choices: dict[str, Choice] = field(default_factory=dict)  # node name -> choice
    lowered: dict[str, int] = field(default_factory=dict)  # rule -> nodes
    fusions: dict[str, int] = field(default_factory=dict)  # fusion -> count
    fusion_notes: list[str] = field(default_factory=list)
    inlined: bool = False  # function bodies expanded into standard ops (providers without functions)

    def annotate(self, layers: list[AttentionLayer], graph: str) -> None:
        """Write each layer's kernel, timings and refusals into its manifest entry."""
        for layer in layers:
            choice = self.choices.get(layer.node) if layer.graph == graph else None
            if choice is not None:
                label = choice.label if not self.inlined else choice.label.replace("portable", "portable (inlined)")
                layer.lowering, layer.timings, layer.rejected = label, choice.timings, choice.rejected


def optimize(
    model: ir.Model,
    options: LoweringOptions,
    expected_fusions: dict[str, int] | None = None,
    allow_shortfall: bool = False,
) -> OptimizeResult:
    """Lower and fuse ``model`` in place for ``options.target``."""
    result = OptimizeResult()
    if options.target is Target.PORTABLE:
        return result
    result.choices, sites = plan(model, options)
    result.lowered = lower(model, result.choices, sites)
    if not options.target.model_functions:
        result.inlined = True
        InlinePass()(model)
        RemoveUnusedFunctionsPass()(model)
        RemoveUnusedOpsetsPass()(model)
    from fastattn.exporter.fusion import fuse  # noqa: PLC0415  (fusion imports onnxscript's rewriter)

    rules = options.target.fusions
    if rules is not None and expected_fusions:
        expected_fusions = {name: n for name, n in expected_fusions.items() if name in rules}
    report = fuse(model, contrib_ops=options.target.contrib_ops, expected=expected_fusions,
                  allow_shortfall=allow_shortfall, rules=rules)  # fmt: skip
    result.fusions = dict(report.counts)
    result.fusion_notes = list(report.notes)
    fast = options.fast_decode
    if fast is not None:
        result.fusions["gqa_rotary"] = fold_rotary(model, fast.rope_theta, fast.head_size, fast.max_positions,
                                                   fast.rope_scaling)
    return result

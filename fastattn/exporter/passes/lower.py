"""LowerAttention: each ``fastattn::Attention`` node becomes its target's chosen kernel."""

from __future__ import annotations

import onnx_ir as ir

from fastattn.exporter.lowering.apply import Choice, lower
from fastattn.exporter.lowering.choose import LoweringOptions, plan
from fastattn.runtime.manifest import AttentionLayer


class LowerAttention(ir.passes.InPlacePass):
    """Plan a :class:`Choice` per attention node (see :mod:`fastattn.exporter.lowering.choose`) and rewrite
    the nodes; ``choices`` and ``lowered`` (rule -> nodes) say what it did."""

    def __init__(self, options: LoweringOptions):
        super().__init__()
        self.options = options
        self.choices: dict[str, Choice] = {}
        self.lowered: dict[str, int] = {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.choices, sites = plan(model, self.options)
        self.lowered = lower(model, self.choices, sites)
        return ir.passes.PassResult(model, modified=bool(self.choices))

    def annotate(self, layers: list[AttentionLayer], graph: str, inlined: bool = False) -> None:
        """Write each layer's kernel, timings and refusals into its manifest entry."""
        for layer in layers:
            choice = self.choices.get(layer.node) if layer.graph == graph else None
            if choice is not None:
                label = choice.label.replace("portable", "portable (inlined)") if inlined else choice.label
                layer.lowering, layer.timings, layer.rejected = label, choice.timings, choice.rejected
                layer.spreads = choice.spreads

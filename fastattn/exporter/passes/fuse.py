"""Fuse: the fusion registry (:mod:`fastattn.exporter.fusion`) as a pass, held to the family's expected counts."""

from __future__ import annotations

import onnx_ir as ir

from fastattn.exporter.fusion import FusionReport, fuse
from fastattn.targets import Target


class Fuse(ir.passes.InPlacePass):
    """Run the target's fusion rules; ``report`` holds the counts and notes (a shortfall raises ExportError)."""

    def __init__(self, target: Target, expected: dict[str, int] | None = None, allow_shortfall: bool = False):
        super().__init__()
        self.target = target
        rules = target.spec.fusions
        self.expected = {k: n for k, n in expected.items() if rules is None or k in rules} if expected else expected
        self.allow_shortfall = allow_shortfall
        self.report: FusionReport | None = None

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.report = fuse(model, contrib_ops=self.target.spec.contrib_ops, expected=self.expected,
                           allow_shortfall=self.allow_shortfall, rules=self.target.spec.fusions)  # fmt: skip
        return ir.passes.PassResult(model, modified=any(self.report.rewrites.values()))

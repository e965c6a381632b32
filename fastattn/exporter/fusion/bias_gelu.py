"""``bias_gelu``: Add(h, bias) + Gelu -> ``com.microsoft::BiasGelu`` (contrib only).

onnxscript's ``ort_fusions.bias_gelu`` rules as they are; they take ONNX ``Gelu`` and
``com.microsoft::Gelu`` alike, so this runs after ``gelu``. ONNX Runtime's session
optimizer makes the same fusion on its own; the rule makes it visible in the report.
"""

from __future__ import annotations

import onnx_ir as ir
from onnxscript.rewriter.ort_fusions import bias_gelu

from fastattn.exporter.fusion.base import MS, PatternFusion, op_id


class BiasGelu(PatternFusion):
    name = "bias_gelu"

    def emits(self, contrib: bool) -> str | None:
        return f"{MS}::BiasGelu" if contrib else None


    def rewrite_rules(self, contrib: bool):
        return bias_gelu.bias_gelu_rules.rules

    def is_fused(self, node: ir.Node) -> bool:
        return op_id(node) == f"{MS}::BiasGelu"

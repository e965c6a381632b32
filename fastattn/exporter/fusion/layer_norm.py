"""``layer_norm``: LayerNormalization (standard, opset 17), on every target.

torch's exporter already emits ``LayerNormalization`` for ``nn.LayerNorm``, so on a
fastattn export this rule rewrites nothing and counts the nodes. A graph from an older
exporter that spelled the norm out (ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div or
Reciprocal·Mul, Mul, Add) is fused by onnxscript's ``LayerNormFusion`` and
``LayerNormBiasFusion``, reused as they are.
"""

from __future__ import annotations

import onnx_ir as ir
from onnxscript.rewriter.rules.fusion import _layer_norm

from fastattn.exporter.fusion.base import PatternFusion, op_id


class LayerNorm(PatternFusion):
    name = "layer_norm"

    def emits(self, contrib: bool) -> str:
        return "LayerNormalization"

    def min_opset(self, contrib: bool) -> int:
        return 17

    def rewrite_rules(self, contrib: bool):
        return _layer_norm.layer_normalization_rules

    def is_fused(self, node: ir.Node) -> bool:
        return op_id(node) == "LayerNormalization"

"""``gelu``: the erf form ``0.5·x·(1 + erf(x/√2))`` -> one exact GELU node.

- contrib: ``com.microsoft::Gelu``, onnxscript's ``ort_fusions.erfgelu`` and
  ``ort_fusions.gelu`` (erf) rules as they are;
- standard: ONNX ``Gelu`` (opset 20), the same onnxscript patterns with an ONNX rewrite.

torch exports ``nn.GELU()`` at opset >= 20 as ONNX ``Gelu`` already; those count as fused
(ONNX Runtime runs them as its own Gelu and fuses the bias itself). The erf form appears
in exports at opset < 20.
"""

from __future__ import annotations

import onnx_ir as ir
from onnxscript.rewriter import pattern
from onnxscript.rewriter.ort_fusions import erfgelu
from onnxscript.rewriter.ort_fusions import gelu as ort_gelu

from fastattn.exporter.fusion.base import MS, PatternFusion, op_id


def _onnx_gelu(op, x, **_):
    return op.Gelu(x)


class _OnnxGeluErfFusion(ort_gelu.GeluErfFusion):
    def rewrite(self, op, x):
        return op.Gelu(x)


class Gelu(PatternFusion):
    name = "gelu"

    def emits(self, contrib: bool) -> str:
        return f"{MS}::Gelu" if contrib else "Gelu"

    def min_opset(self, contrib: bool) -> int:
        return 0 if contrib else 20

    def rewrite_rules(self, contrib: bool):
        if contrib:
            return [*erfgelu.rules.rules, ort_gelu._erf_rule]
        return [
            pattern.RewriteRule(erfgelu.erf_gelu_pattern_1, _onnx_gelu, name="ErfGelu1"),
            pattern.RewriteRule(erfgelu.erf_gelu_pattern_2, _onnx_gelu, name="ErfGelu2"),
            _OnnxGeluErfFusion.rule("ErfGelu3"),
        ]

    def is_fused(self, node: ir.Node) -> bool:
        if op_id(node) == f"{MS}::Gelu":
            return True
        return op_id(node) == "Gelu" and node.attributes.get_string("approximate", "none") != "tanh"

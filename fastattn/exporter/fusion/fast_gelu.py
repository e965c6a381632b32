"""``fast_gelu``: the tanh approximation of GELU -> one node.

- contrib: ``com.microsoft::FastGelu``, from the spelled-out form
  ``0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`` (onnxscript's ``GeluTanhFusion`` as it is)
  or from ONNX ``Gelu(approximate="tanh")`` (our one-node rule);
- standard: ONNX ``Gelu(approximate="tanh")`` (opset 20) from the spelled-out form.

Only a model that computes the tanh approximation matches: an exact ``Gelu`` is never
swapped for FastGelu, which would change the numbers (about 1e-3 apart).
"""

from __future__ import annotations

import onnx_ir as ir
from onnxscript.rewriter import pattern
from onnxscript.rewriter.ort_fusions import gelu as ort_gelu

from fastattn.exporter.fusion.base import MS, PatternFusion, op_id


class _GeluTanhToFastGelu(pattern.RewriteRuleClassBase):
    """ONNX ``Gelu(approximate="tanh")`` -> ``com.microsoft::FastGelu`` (the same formula)."""

    def pattern(self, op, x):
        return op.Gelu(x, approximate="tanh")

    def rewrite(self, op, x):
        return op.FastGelu(x, _domain=MS)


class _OnnxGeluTanhFusion(ort_gelu.GeluTanhFusion):
    def rewrite(self, op, x):
        return op.Gelu(x, approximate="tanh")


class FastGelu(PatternFusion):
    name = "fast_gelu"

    def emits(self, contrib: bool) -> str:
        return f"{MS}::FastGelu" if contrib else "Gelu(approximate=tanh)"

    def min_opset(self, contrib: bool) -> int:
        return 0 if contrib else 20

    def rewrite_rules(self, contrib: bool):
        if contrib:
            return [ort_gelu._tanh_rule, _GeluTanhToFastGelu.rule("GeluTanhToFastGelu")]
        return [_OnnxGeluTanhFusion.rule("TanhGelu")]

    def is_fused(self, node: ir.Node) -> bool:
        if op_id(node) == f"{MS}::FastGelu":
            return True
        return op_id(node) == "Gelu" and node.attributes.get_string("approximate", "none") == "tanh"

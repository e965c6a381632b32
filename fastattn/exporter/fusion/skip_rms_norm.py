"""``skip_rms_norm``: residual Add (+ bias Add) + RMS norm -> SkipSimplifiedLayerNormalization.

contrib only (``com.microsoft::SkipSimplifiedLayerNormalization``); must run after
``rms_norm``, whose contrib form it consumes. onnxscript's
``ort_fusions.skip_normalization`` rules as they are.
"""

from __future__ import annotations

import onnx_ir as ir
from onnxscript.rewriter.ort_fusions import skip_normalization

from fastattn.exporter.fusion.base import MS, PatternFusion, op_id


class SkipRmsNorm(PatternFusion):
    name = "skip_rms_norm"

    def emits(self, contrib: bool) -> str | None:
        return f"{MS}::SkipSimplifiedLayerNormalization" if contrib else None


    def rewrite_rules(self, contrib: bool):
        return skip_normalization.skip_rms_normalization_ruleset.rules

    def is_fused(self, node: ir.Node) -> bool:
        return op_id(node) == f"{MS}::SkipSimplifiedLayerNormalization"

"""``skip_layer_norm``: residual Add (+ bias Add) + LayerNormalization -> SkipLayerNormalization.

contrib only (``com.microsoft::SkipLayerNormalization``; ONNX has no skip norm). The
rules are onnxscript's ``ort_fusions.skip_normalization`` ones as they are: the bias of
the projection feeding the residual is folded in (``x + (h·W + b)``), and the node's
fourth output carries the sum on to the next residual, so pre-LN blocks fuse too.
Must run after ``layer_norm``.

ONNX Runtime's session optimizer fuses only the Adds whose result feeds nothing but the
norm; in a pre-LN block the sum also feeds the next residual, so it leaves those alone.

Off by default: ONNX Runtime 1.32's CPU kernel for SkipLayerNormalization is slower than
the Add and LayerNormalization it replaces (102 us vs 7 + 20 us on (1, 128, 384) at 2
threads, 191 vs 25 us at 1), and a 6-layer d=384 encoder ran 12% slower at S=128 with it.
"""

from __future__ import annotations

import onnx_ir as ir
from onnxscript.rewriter.ort_fusions import skip_normalization

from fastattn.exporter.fusion.base import MS, PatternFusion, op_id


class SkipLayerNorm(PatternFusion):
    name = "skip_layer_norm"
    off_by_default = (
        "ORT 1.32 CPU runs SkipLayerNormalization slower than Add + LayerNormalization "
        "(102 vs 27 us on (1, 128, 384)); a 6-layer d=384 encoder ran 12% slower"
    )

    def emits(self, contrib: bool) -> str | None:
        return f"{MS}::SkipLayerNormalization" if contrib else None


    def rewrite_rules(self, contrib: bool):
        return skip_normalization.skip_layer_normalization_ruleset.rules

    def is_fused(self, node: ir.Node) -> bool:
        return op_id(node) == f"{MS}::SkipLayerNormalization"

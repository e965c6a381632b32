"""``rms_norm``: Pow/ReduceMean/Add/Sqrt/Reciprocal/Mul/Mul -> one RMS norm node.

- contrib: ``SimplifiedLayerNormalization`` (an ONNX Runtime op, registered in the default
  domain), onnxscript's ``ort_fusions.rms_normalization.RmsNormFusion``;
- standard: ONNX ``RMSNormalization`` (opset 23), onnxscript's
  ``rules.fusion._rms_normalization.RmsNormFusion``.

Both onnxscript rules are reused for their ``check`` and ``rewrite``; the pattern is
overridden in one respect only: onnxscript's hard-codes ``ReduceMean`` axes ``[-1]``,
while torch exports ``nn.RMSNorm`` with the positive last axis (``[2]`` on (B, S, D)), so
here the axes are a variable that ``check`` requires to be the last axis.

ONNX Runtime's own session optimizer does not fuse this form either (it looks for Div,
torch emits Reciprocal·Mul).
"""

from __future__ import annotations

import onnx_ir as ir
from onnxscript.rewriter import _ir_utils, pattern
from onnxscript.rewriter.ort_fusions import rms_normalization as ort_rms
from onnxscript.rewriter.rules.fusion import _rms_normalization as onnx_rms

from fastattn.exporter.fusion.base import PatternFusion, op_id


class _LastAxisRmsPattern:
    """onnxscript's RMS norm pattern with the ReduceMean axes as a checked variable."""

    _cast_scale: bool

    def pattern(self, op, x, scale, epsilon, compute_dtype, target_dtype, axes):
        x = pattern.OrValue([op.Cast(x, to=compute_dtype), x])
        mean_square = op.ReduceMean(op.Pow(x, 2.0), axes, keepdims=1, noop_with_empty_axes=0)
        normalized = op.Mul(x, op.Reciprocal(op.Sqrt(op.Add(mean_square, epsilon))))
        normalized = pattern.OrValue([op.Cast(normalized, to=target_dtype), normalized])
        if self._cast_scale:
            scale = pattern.OrValue([op.Cast(scale, to=compute_dtype), scale])
        return op.Mul(normalized, scale) if self._mul_order else op.Mul(scale, normalized)

    def check(self, context, x, axes, **kwargs) -> pattern.MatchResult:
        rank = x.shape.rank() if x.shape is not None else None
        last = {-1} if rank is None else {-1, rank - 1}
        if not _ir_utils.is_singleton_value(axes, lambda a: a in last):
            return pattern.MatchResult().fail("ReduceMean is not over the last axis only", axes)
        return super().check(context, x=x, **kwargs)


class ContribRmsNormFusion(_LastAxisRmsPattern, ort_rms.RmsNormFusion):
    _cast_scale = True


class OnnxRmsNormFusion(_LastAxisRmsPattern, onnx_rms.RmsNormFusion):
    _cast_scale = False


class RmsNorm(PatternFusion):
    name = "rms_norm"

    def __init__(self):
        self._rules = {
            True: [ContribRmsNormFusion.rule("RmsNorm", _mul_order=order) for order in (True, False)],
            False: [OnnxRmsNormFusion.rule("RmsNorm23", mul_order=order) for order in (True, False)],
        }

    def emits(self, contrib: bool) -> str:
        return "SimplifiedLayerNormalization" if contrib else "RMSNormalization"

    def min_opset(self, contrib: bool) -> int:
        return 0 if contrib else 23

    def rewrite_rules(self, contrib: bool):
        return self._rules[contrib]

    def is_fused(self, node: ir.Node) -> bool:
        return op_id(node) in ("SimplifiedLayerNormalization", "RMSNormalization")

"""InlineFunctions: function bodies expanded into standard ops, for providers that run no functions.

OpenVINO EP (onnxruntime-openvino 1.24.1) claims a ``fastattn`` function node and then fails
to read it ("does not support ... fastattn.Attention"); see :mod:`fastattn.targets`.
"""

from __future__ import annotations

import onnx_ir as ir
from onnx_ir.passes.common import InlinePass, RemoveUnusedFunctionsPass, RemoveUnusedOpsetsPass


class InlineFunctions(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        had = bool(model.functions)
        for step in (InlinePass(), RemoveUnusedFunctionsPass(), RemoveUnusedOpsetsPass()):
            step(model)
        return ir.passes.PassResult(model, modified=had)

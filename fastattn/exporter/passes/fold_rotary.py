"""FoldRotary: rotary and packed QKV folded into GroupQueryAttention (``do_rotary``), the --kv-buffer path.

See :mod:`fastattn.exporter.lowering.gqa_rotary` for the rewrite and its measured gain.
"""

from __future__ import annotations

import onnx_ir as ir

from fastattn.exporter.lowering.gqa_rotary import fold_rotary
from fastattn.families.base import FastDecode


class FoldRotary(ir.passes.InPlacePass):
    def __init__(self, fast: FastDecode):
        super().__init__()
        self.fast = fast
        self.folded = 0

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        fast = self.fast
        self.folded = fold_rotary(model, fast.rope_theta, fast.head_size, fast.max_positions, fast.rope_scaling)
        return ir.passes.PassResult(model, modified=bool(self.folded))

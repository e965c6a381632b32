"""FoldConstants: make an inlined graph one OpenVINO EP partition by folding its scalar constants.

onnxruntime-openvino 1.24.1 decides per node whether OpenVINO takes it. A node with a 0-D
(scalar) input or output that is not a constant initializer is refused unless its op is in
a short list (Add, Cast, Equal, Less, Range, Where, ...; not Or, GreaterOrEqual, Max, Not,
CastLike), and the refused nodes split the graph. The inlined attention bodies and lowering
rules are full of such scalars (``Constant`` nodes, ``CastLike(-inf, scores)``,
``Or(Equal(causal, 0), ...)``): a 6-layer encoder became 13 OpenVINO subgraphs with Casts
run by the CPU EP between them, and static int8 gained nothing, as its quantized MatMuls
were cut apart from the rest. onnxscript's optimizer folds them (constants become
initializers, ``CastLike`` of a constant becomes a constant): one partition.

Measured (6-layer d=384 encoder, B=1, S=128, OpenVINO EP, 2 threads, one run): fp32 10.6 ->
8.1 ms, int8-static 10.5 -> 3.4 ms (``benchmarks/results/openvino_int8.md``).
"""

from __future__ import annotations

import onnx_ir as ir
import onnxscript


class FoldConstants(ir.passes.InPlacePass):
    """onnxscript's optimizer: constants folded and lifted to initializers (exact: no op changes its numbers)."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        onnxscript.optimizer.optimize(model, num_iterations=2)
        return ir.passes.PassResult(model, modified=True)

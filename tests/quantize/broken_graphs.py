"""Deliberately broken quantized graphs: what validation of a quantized export must reject.

    zero_weight(path, k)   the k-th quantized weight (graph order) zeroed: MatMulInteger's int8 weight set to
                           its zero point, MatMulNBits' scales set to 0 (a dequantized weight of zeros)
    ignore_mask(path)      the graph's ``attention_mask`` replaced by ones of its shape (padding attended to,
                           positions counted over padding)
    nan_output(path, name) the output ``name`` made NaN where it is largest (one position)

Used by tests/quantize/test_validation_bounds.py and benchmarks/quantized_validation.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx_ir as ir

from fastattn.onnx_files import load_in_memory, replace_model
from fastattn.onnx_names import module_path

QUANTIZED = ("MatMulInteger", "MatMulNBits", "DynamicQuantizeMatMul")


def quantized_nodes(model: ir.Model) -> list[ir.Node]:
    return [n for n in model.graph if n.op_type in QUANTIZED]


def zero_weight(path: Path, k: int) -> str:
    """Zero the ``k``-th quantized weight of the graph in ``path`` (in place); the module it belongs to."""
    model = load_in_memory(path)
    node = quantized_nodes(model)[k]
    if node.op_type == "MatMulNBits":
        scales = node.inputs[2]
        scales.const_value = ir.tensor(np.zeros_like(scales.const_value.numpy()), name=scales.name)
    else:
        weight = node.inputs[1]
        zero = node.inputs[3] if len(node.inputs) > 3 and node.inputs[3] is not None else None
        value = weight.const_value.numpy()
        fill = zero.const_value.numpy() if zero is not None else np.zeros((), value.dtype)
        weight.const_value = ir.tensor(np.broadcast_to(fill, value.shape).astype(value.dtype).copy(), name=weight.name)
    replace_model(model, path.parent, path.name)
    return module_path(node) or node.name


def ignore_mask(path: Path) -> None:
    """Replace ``attention_mask`` inside the graph in ``path`` with ones of its shape (in place)."""
    model = load_in_memory(path)
    graph = model.graph
    mask = next(v for v in graph.inputs if v.name == "attention_mask")
    uses = list(mask.uses())
    shape = ir.node("Shape", [mask], name="broken_shape")
    ones = ir.node("ConstantOfShape", [shape.outputs[0]], {"value": ir.tensor(np.ones(1, np.int64))}, name="broken_ones")
    shape.outputs[0].name, ones.outputs[0].name = "broken_shape", "broken_ones"
    for use in uses:
        use.node.replace_input_with(use.idx, ones.outputs[0])
    graph.insert_before(graph.node(0), [shape, ones])
    replace_model(model, path.parent, path.name)


def nan_output(path: Path, name: str) -> None:
    """Make output ``name`` of the graph in ``path`` NaN where it is largest (in place): ``Where(x == max x, NaN, x)``."""
    model = load_in_memory(path)
    graph = model.graph
    out = next(v for v in graph.outputs if v.name == name)
    out.name = f"{name}_before_nan"
    top = ir.node("ReduceMax", [out], {"keepdims": 1}, name="broken_max")
    at = ir.node("Equal", [out, top.outputs[0]], name="broken_at_max")
    nan = ir.node("Constant", [], {"value": ir.tensor(np.array(np.nan, np.float32))}, name="broken_nan")
    poisoned = ir.node("Where", [at.outputs[0], nan.outputs[0], out], name="broken_where")
    for node in (top, at, nan):
        node.outputs[0].name = node.name
    poisoned.outputs[0].name = name
    graph.extend([top, at, nan, poisoned])
    graph.outputs[graph.outputs.index(out)] = poisoned.outputs[0]
    replace_model(model, path.parent, path.name)

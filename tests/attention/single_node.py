"""A model holding one fastattn::Attention node for a grid case (its overload chosen by attach_functions)."""

from __future__ import annotations

import onnx
import onnx_ir as ir
from onnx import TensorProto, helper

from fastattn.attention.onnx_function import DOMAIN, OP_TYPE, attach_functions
from tests.attention.grid import Case
from tests.attention.hierarchical_grid import HCase

RANK = {"key_mask": 2, "past_key": 4, "past_value": 4, "present_key": 4, "present_value": 4}


def single_node_model(case: Case | HCase, has_mask: bool, opset: int = 20) -> onnx.ModelProto:
    has_past = case.past > 0
    names = ["query", "key", "value", "past_key" if has_past else "", "past_value" if has_past else "",
             "key_mask" if has_mask else ""]  # fmt: skip
    while names and not names[-1]:
        names.pop()
    kind = ({"block": case.block} if isinstance(case, HCase)
            else {"window": case.window, "global_tokens": case.global_tokens})  # fmt: skip
    node = helper.make_node(
        OP_TYPE, names, ["output", "present_key", "present_value"], domain=DOMAIN,
        num_heads=case.heads, kv_num_heads=case.kv_heads, causal=int(case.causal), **kind,
    )  # fmt: skip
    # static feature dims (as in exported models), dynamic batch and sequence
    packed = {"query": case.heads * case.head_size, "key": case.kv_heads * case.head_size,
              "value": case.kv_heads * case.head_size, "output": case.heads * case.head_size}  # fmt: skip

    def info(name: str, dtype=TensorProto.FLOAT):
        if name in packed:
            shape = ["B", "S" if name in ("query", "output") else "T", packed[name]]
        elif name == "key_mask":
            shape = ["B", "N"]  # every position (a compact hierarchical cache has fewer slots)
        else:
            shape = ["B", case.kv_heads, "P" if name.startswith("past") else "L", case.head_size]
        return helper.make_tensor_value_info(name, dtype, shape)

    inputs = [info(n, TensorProto.INT64 if n == "key_mask" else TensorProto.FLOAT) for n in names if n]
    graph = helper.make_graph([node], "g", inputs, [info("output"), info("present_key"), info("present_value")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model = ir.serde.deserialize_model(proto)
    assert attach_functions(model) == 1
    return ir.serde.serialize_model(model)

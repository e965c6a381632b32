"""``packed_qkv``: the q, k, v projections of one attention -> one MatMul (+ one Add) + Split.

Pattern: a value ``x`` that is the left operand of exactly three MatMuls whose right
operands are constant 2-D weights (K, N_i) with the same K: the q, k and v projections
of a self-attention (the widths may differ: grouped-query attention). When each MatMul
feeds only an ``Add`` of a constant (N_i,) bias, the biases are packed too.

Rewrite: ``Split(MatMul(x, [W_q | W_k | W_v]) [+ [b_q | b_k | b_v]], [N_q, N_k, N_v], axis=-1)``.
Standard ops: valid on every target. One GEMM of width N_q+N_k+N_v reads x once instead
of three times, and ONNX Runtime launches one kernel instead of three.

Why three exactly: in a fastattn graph two sibling projections are a SwiGLU FFN's gate
and up (or cross-attention keys and values), and four or more are the cross-attention
keys and values of several decoder layers reading the encoder output; packing those is a
different trade and would muddle the count, which is one per self-attention layer.

Not an onnxscript pattern: the three outputs share only their input, and onnxscript's
matcher for multi-output patterns tries every triple of MatMuls in the graph (cubic in
the number of MatMuls). Here one pass groups each value's MatMul consumers; ``check``
explains itself with ``MatchResult().fail(...)`` like a pattern rule's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter.pattern import MatchResult

from fastattn.exporter.fusion.base import FusionRule, graphs
from fastattn.exporter.lowering.graph_ops import add_initializer

TAG = "fastattn.fusion"


@dataclass
class Projection:
    """One MatMul of a constant weight, with the bias Add that alone consumes it, if any."""

    matmul: ir.Node
    weight: np.ndarray
    bias_add: ir.Node | None = None
    bias: np.ndarray | None = None

    @property
    def output(self) -> ir.Value:
        return (self.bias_add or self.matmul).outputs[0]


def _constant(value: ir.Value | None) -> np.ndarray | None:
    if value is None or value.const_value is None:
        return None
    return value.const_value.numpy()


def _is_op(node: ir.Node, op_type: str) -> bool:
    return node.op_type == op_type and node.domain in ("", "ai.onnx")


def _operand(p: Projection) -> int:
    """Which input of the bias Add the MatMul output is."""
    return 0 if p.bias_add.inputs[0] is p.matmul.outputs[0] else 1


def _packed_scopes(first: ir.Node) -> dict[str, str]:
    """Module scopes for the packed MatMul: the attention module of the projections, plus ``.qkv``
    (so reports and --keep-float name it like the PyTorch modules it replaces)."""
    key = "pkg.torch.onnx.name_scopes"
    scopes = [s.strip(" '") for s in first.metadata_props.get(key, "").strip("[]").split(",") if s.strip(" '")]
    if len(scopes) < 3:
        return {}
    return {key: repr([*scopes[:-2], f"{scopes[-3]}.qkv", "packed_qkv"])}


def _take_over(old: ir.Value, new: ir.Value) -> None:
    """``new`` replaces ``old`` everywhere; a graph output keeps its name."""
    new.shape, new.type = old.shape, old.type
    if old.is_graph_output():
        name, old.name = old.name, None
        new.name = name
    else:
        new.name = f"{old.name}_split"
    old.replace_all_uses_with(new, replace_graph_outputs=True)


def _projection(matmul: ir.Node) -> Projection:
    weight = _constant(matmul.inputs[1])
    out = matmul.outputs[0]
    uses = list(out.uses())
    if len(uses) == 1 and not out.is_graph_output() and _is_op(uses[0].node, "Add"):
        add = uses[0].node
        other = add.inputs[1 - uses[0].idx]
        bias = _constant(other)
        if bias is not None and bias.shape == (weight.shape[1],):
            return Projection(matmul, weight, add, bias)
    return Projection(matmul, weight)


class PackedQkv(FusionRule):
    name = "packed_qkv"

    def emits(self, contrib: bool) -> str:
        return "MatMul+Split"

    def pattern(self, graph: ir.Graph) -> list[tuple[ir.Value, list[ir.Node]]]:
        """Values that are the left operand of two or more MatMuls with constant weights."""
        groups: dict[ir.Value, list[ir.Node]] = {}
        for node in graph:
            x = node.inputs[0] if _is_op(node, "MatMul") else None
            if x is not None and _constant(node.inputs[1]) is not None:
                groups.setdefault(x, []).append(node)
        return [(x, matmuls) for x, matmuls in groups.items() if len(matmuls) >= 2]

    def check(self, x: ir.Value, matmuls: list[ir.Node]) -> MatchResult:
        result = MatchResult()
        if len(matmuls) != 3:
            return result.fail(
                f"{x.name!r} feeds {len(matmuls)} MatMuls with constant weights, not the 3 of q, k, v", x
            )
        weights = [_constant(m.inputs[1]) for m in matmuls]
        if any(w.ndim != 2 for w in weights):
            return result.fail(f"a projection of {x.name!r} has a weight that is not 2-D", matmuls[0])
        if len({w.shape[0] for w in weights}) != 1 or len({w.dtype for w in weights}) != 1:
            return result.fail(f"the projections of {x.name!r} differ in input width or dtype", matmuls[0])
        if any(m.outputs[0].is_graph_output() for m in matmuls):
            return result.fail(f"a projection of {x.name!r} is a graph output", matmuls[0])
        return result

    def apply(self, model: ir.Model, contrib: bool) -> int:
        count = 0
        for graph in list(graphs(model)):
            for x, matmuls in self.pattern(graph):
                if self.check(x, matmuls):
                    self.rewrite(graph, x, matmuls)
                    count += 1
        return count

    def rewrite(self, graph: ir.Graph, x: ir.Value, matmuls: list[ir.Node]) -> None:
        projections = [_projection(m) for m in matmuls]
        with_bias = all(p.bias is not None for p in projections)
        order = {node: i for i, node in enumerate(graph)}
        first = min(matmuls, key=order.__getitem__)
        stem = f"{first.outputs[0].name or x.name}_qkv"
        weights = np.concatenate([p.weight for p in projections], axis=1)
        widths = np.array([p.weight.shape[1] for p in projections], dtype=np.int64)

        weight = add_initializer(graph, f"{stem}_weight", weights)
        nodes = [ir.node("MatMul", [x, weight], name=f"{stem}_MatMul", metadata_props=_packed_scopes(first))]
        nodes[0].outputs[0].name = f"{stem}_matmul"
        if with_bias:
            bias = add_initializer(graph, f"{stem}_bias", np.concatenate([p.bias for p in projections]))
            nodes.append(ir.node("Add", [nodes[-1].outputs[0], bias], name=f"{stem}_Add"))
            nodes[-1].outputs[0].name = f"{stem}_packed"
        packed = nodes[-1].outputs[0]
        nodes.append(ir.node("Constant", [], {"value": ir.tensor(widths)}, name=f"{stem}_widths"))
        nodes[-1].outputs[0].name = f"{stem}_widths"
        split = ir.node("Split", [packed, nodes[-1].outputs[0]], {"axis": -1}, num_outputs=3,
                        name=f"{stem}_Split", metadata_props={TAG: self.name})  # fmt: skip
        graph.insert_before(first, [*nodes, split])

        constants = [m.inputs[1] for m in matmuls]
        constants += [p.bias_add.inputs[1 - _operand(p)] for p in projections if with_bias]
        for p, new in zip(projections, split.outputs):
            old = p.output if with_bias else p.matmul.outputs[0]
            _take_over(old, new)
        graph.remove([n for p in projections for n in ((p.bias_add, p.matmul) if with_bias else (p.matmul,))],
                     safe=True)  # fmt: skip
        for value in constants:
            if value.is_initializer() and not value.uses() and not value.is_graph_output():
                graph.initializers.pop(value.name, None)


    def is_fused(self, node: ir.Node) -> bool:
        return node.metadata_props.get(TAG) == self.name

    def explain(self, model: ir.Model, contrib: bool) -> str:
        reasons = [
            self.check(x, matmuls).reason for graph in graphs(model) for x, matmuls in self.pattern(graph)
        ]
        if not reasons:
            return "no value is the input of two or more MatMuls with constant weights"
        shown = "; ".join(reasons[:3])
        return shown + (f"; and {len(reasons) - 3} more" if len(reasons) > 3 else "")

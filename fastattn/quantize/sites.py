"""Which nodes quantization may touch (weight sites), which it must not (attention), and keep_float.

A *weight site* is a MatMul or Gemm of the main graph whose weight, input B, is a float
initializer of rank 2 (a Linear layer). Everything else stays float, in particular:

- attention: ``fastattn`` function calls, ``GroupQueryAttention``, ``MultiHeadAttention``,
  ONNX ``Attention`` and the ``If`` nodes lowering wraps around them;
- activation x activation MatMuls (Q·Kᵀ and P·V of attention bodies inlined for OpenVINO,
  of blocked-local lowerings), which have no constant B;
- nodes inside model-local functions and If/Loop branches: onnxruntime's quantizers do not
  reach function bodies, and exported subgraphs hold attention only (no weights).

``keep_float`` entries name a node, a weight initializer or a module-path prefix
(``decoder.layers.0`` keeps every weight of that layer); an entry that matches nothing
is an :class:`~fastattn.errors.InputError`, so a typo never quantizes what was meant to stay.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import onnx
import onnx_ir as ir

from fastattn.attention.onnx_function import DOMAIN
from fastattn.errors import InputError
from fastattn.onnx_names import module_path
from fastattn.quantize.options import WeightSite

WEIGHT_OPS = ("MatMul", "Gemm")
ATTENTION_OPS = frozenset(
    {
        "GroupQueryAttention",
        "MultiHeadAttention",
        "Attention",
        "PackedMultiHeadAttention",
        "PagedAttention",
        "SparseAttention",
        "QAttention",
        "DecoderMaskedMultiHeadAttention",
    }
)
FLOAT_TYPES = (ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16)

ModelLike = ir.Model | onnx.ModelProto | str | Path


def as_ir(model: ModelLike) -> ir.Model:
    """An onnx_ir model from a path (external data read lazily), a ModelProto, or itself."""
    if isinstance(model, ir.Model):
        return model
    if isinstance(model, onnx.ModelProto):
        return ir.serde.deserialize_model(model)
    return ir.load(Path(model))



def weight_sites(model: ModelLike) -> list[WeightSite]:
    """The main graph's MatMul/Gemm nodes whose weight B is a rank-2 float initializer, in graph order."""
    model = as_ir(model)
    sites = []
    for node in model.graph:
        if node.domain not in ("", "ai.onnx") or node.op_type not in WEIGHT_OPS or len(node.inputs) < 2:
            continue
        weight = node.inputs[1]
        if weight is None or not weight.is_initializer() or weight.const_value is None:
            continue
        tensor = weight.const_value
        if tensor.dtype not in FLOAT_TYPES or len(tensor.shape) != 2:
            continue
        sites.append(
            WeightSite(
                node.name or "",
                node.op_type,
                weight.name or "",
                tuple(tensor.shape.numpy()),
                module_path(node),
            )
        )
    return sites


def is_attention(node: ir.Node) -> bool:
    """A node that computes attention: a fastattn function call, an attention kernel, or an If around one."""
    if node.domain == DOMAIN or node.op_type in ATTENTION_OPS:
        return True
    return any(
        is_attention(inner) for g in _subgraphs(node) for inner in ir.traversal.RecursiveGraphIterator(g)
    )


def protected_nodes(model: ModelLike) -> dict[str, tuple[str, str, tuple[str, ...]]]:
    """Main-graph nodes that must come out of quantization unchanged: attention (with its If
    wrappers) and MatMuls without a constant weight. Name -> (domain, op type, input names)."""
    model = as_ir(model)
    weights = {s.node for s in weight_sites(model)}
    out = {}
    for node in model.graph:
        if is_attention(node) or (node.op_type == "MatMul" and node.name not in weights):
            out[node.name] = (node.domain, node.op_type, tuple(v.name if v else "" for v in node.inputs))
    return out


def match_keep_float(sites: Iterable[WeightSite], keep: Iterable[str]) -> tuple[dict[str, str], list[str]]:
    """Sites named by ``keep``: (node -> the entry that matched it, entries that matched nothing)."""
    sites = list(sites)
    matched: dict[str, str] = {}
    unmatched = []
    for entry in keep:
        hits = [
            s
            for s in sites
            if entry in (s.node, s.weight) or s.module == entry or s.module.startswith(entry + ".")
        ]
        if not hits:
            unmatched.append(entry)
        for s in hits:
            matched.setdefault(s.node, entry)
    return matched, unmatched


def select(
    sites: list[WeightSite], keep: Iterable[str], model_name: str
) -> tuple[list[WeightSite], dict[str, str]]:
    """Split ``sites`` into those to quantize and those kept by ``keep`` (node -> reason)."""
    matched, unmatched = match_keep_float(sites, keep)
    if unmatched:
        example = sites[0].module if sites else "decoder.layers.0"
        raise InputError(
            f"keep_float {', '.join(repr(u) for u in unmatched)} matches no weight of {model_name}",
            f"name a node, a weight initializer or a module path such as {example!r} "
            "(`weight_sites` lists them)",
        )
    kept = {node: f"keep_float: {entry!r}" for node, entry in matched.items()}
    return [s for s in sites if s.node not in kept], kept


def _subgraphs(node: ir.Node) -> list[ir.Graph]:
    graphs = []
    for attr in node.attributes.values():
        if attr.type == ir.AttributeType.GRAPH:
            graphs.append(attr.value)
        elif attr.type == ir.AttributeType.GRAPHS:
            graphs.extend(attr.value)
    return graphs


def fold_weight_transposes(model: ir.Model) -> list[str]:
    """Give each ``MatMul(x, Transpose(W))`` over a rank-2 float initializer its own transposed
    initializer, so the MatMul becomes a weight site. torch.onnx leaves this shape for a tied
    LM head (the embedding table is shared with a Gather); without the fold the largest weight
    of a big-vocabulary decoder would stay float. Returns the MatMul nodes changed."""
    changed = []
    for node in list(model.graph):
        if node.op_type != "MatMul" or node.domain not in ("", "ai.onnx") or len(node.inputs) < 2:
            continue
        producer = node.inputs[1].producer() if node.inputs[1] is not None else None
        if producer is None or producer.op_type != "Transpose" or producer.domain not in ("", "ai.onnx"):
            continue
        source = producer.inputs[0]
        perm = producer.attributes.get("perm")
        if source is None or not source.is_initializer() or source.const_value is None:
            continue
        tensor = source.const_value
        if tensor.dtype not in FLOAT_TYPES or len(tensor.shape) != 2 or (perm and list(perm.value) != [1, 0]):
            continue
        name = f"{source.name}.T"
        value = model.graph.initializers.get(name)
        if value is None:
            value = ir.Value(name=name, const_value=ir.tensor(tensor.numpy().T.copy(), name=name))
            model.graph.register_initializer(value)
        node.replace_input_with(1, value)
        if not producer.outputs[0].uses() and not producer.outputs[0].is_graph_output():
            model.graph.remove(producer, safe=True)
        changed.append(node.name or "")
    return changed

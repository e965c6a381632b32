"""capture: each prepared graph through torch.onnx.export; its fastattn::Attention nodes become layers."""

from __future__ import annotations

import onnx_ir as ir

from fastattn.attention.onnx_function import DOMAIN, OP_TYPE
from fastattn.attention.spec import AttentionSpec
from fastattn.exporter.capture import capture
from fastattn.exporter.state import ExportState
from fastattn.exporter.steps import Step
from fastattn.onnx_names import module_path
from fastattn.runtime.manifest import AttentionLayer


class Capture(Step):
    name = "capture"

    def run(self, state: ExportState) -> None:
        for graph in state.prepared.graphs:
            state.progress(f"capturing {graph.file}")
            with state.timed(f"capture {graph.name}"):
                model = capture(graph, state.options.opset)
            state.models[graph.name] = model
            state.manifest.attention += attention_layers(graph.name, model)


def attention_layers(graph: str, model: ir.Model) -> list[AttentionLayer]:
    """The ``fastattn::Attention`` nodes of a captured model, with their attributes."""
    layers = []
    for node in model.graph:
        if node.domain != DOMAIN or node.op_type != OP_TYPE:
            continue
        attr = {name: a.value for name, a in node.attributes.items()}
        spec = AttentionSpec(
            attr["num_heads"], attr["kv_num_heads"], bool(attr.get("causal", 0)),
            attr.get("window", 0), attr.get("global_tokens", 0), attr.get("scale", 0.0), attr.get("block", 0),
        )  # fmt: skip
        layers.append(
            AttentionLayer(
                graph, module_path(node), node.name, spec.kind, spec.num_heads, spec.kv_num_heads,
                spec.causal, spec.window, spec.global_tokens, node.overload, block=spec.block,
            )  # fmt: skip
        )
    return layers

"""Where a node of a captured ONNX graph came from: the PyTorch module path torch.onnx recorded.

onnx_ir only (no torch): the exporter, lowering and the torch-free quantizer all read it.
"""

from __future__ import annotations

import onnx_ir as ir


def module_path(node: ir.Node) -> str:
    """The PyTorch module a captured node came from, e.g. ``decoder.layers.0.self_attn``; else its name."""
    scopes = node.metadata_props.get("pkg.torch.onnx.name_scopes", "")
    names = [s.strip(" '") for s in scopes.strip("[]").split(",") if s.strip(" '")]
    path = names[-2] if len(names) >= 2 else (node.name or "")
    return path.removeprefix("model.")

"""ONNX graphs on disk: weights beside the graph (external data) once they are large.

onnx_ir only (no torch): the exporter and the torch-free quantizer both save through it.
"""

from __future__ import annotations

from pathlib import Path

import onnx_ir as ir

# Above this many bytes of weights, save them beside the graph (model.onnx.data);
# protobuf cannot hold a file over 2 GiB.
EXTERNAL_DATA_THRESHOLD = 1 << 30


def save_model(model: ir.Model, directory: Path, file: str, threshold: int = EXTERNAL_DATA_THRESHOLD) -> list[str]:
    """Save ``model`` as ``directory/file``; weights go to ``file.data`` when they exceed ``threshold`` bytes."""
    size = sum(v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None)
    if size > threshold:
        ir.save(model, directory / file, external_data=f"{file}.data", size_threshold_bytes=1024)
        return [file, f"{file}.data"]
    ir.save(model, directory / file)
    return [file]

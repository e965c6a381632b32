"""ONNX graphs on disk: weights beside the graph (external data) once they are large.

onnx_ir only (no torch): the exporter and the torch-free quantizer both save through it.
"""

from __future__ import annotations

from pathlib import Path

import onnx_ir as ir

# Above this many bytes of weights, save them beside the graph (model.onnx.data), as Optimum and
# GenAI's builder do. ONNX Runtime maps an external data file instead of holding a parsed copy of
# the graph's weights: a 6x512 Llama with a 32000-token vocabulary in int4 (89 MB) had 163 MB of
# RSS after its CPU session was made (peak 203 MB) with the weights inside model.onnx, and 89 MB
# (peak 97 MB) with the same graph's weights beside it (benchmarks/results/genai_hf.md tracks the
# peak). Below 1 MiB one file is simpler and the copy does not matter. Protobuf cannot hold a
# file over 2 GiB either way.
EXTERNAL_DATA_THRESHOLD = 1 << 20


def save_model(model: ir.Model, directory: Path, file: str, threshold: int = EXTERNAL_DATA_THRESHOLD) -> list[str]:
    """Save ``model`` as ``directory/file``; weights go to ``file.data`` when they exceed ``threshold`` bytes."""
    size = sum(v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None)
    if size > threshold:
        ir.save(model, directory / file, external_data=f"{file}.data", size_threshold_bytes=1024)
        return [file, f"{file}.data"]
    ir.save(model, directory / file)
    return [file]


def load_in_memory(path: Path) -> ir.Model:
    """The graph at ``path`` with every weight read into memory, so that :func:`replace_model` may remove the
    file they came from. Read them before touching any: a weight's array can still point into that file."""
    model = ir.load(path)
    ir.external_data.load_to_model(model)
    return model


def replace_model(model: ir.Model, directory: Path, file: str, threshold: int = EXTERNAL_DATA_THRESHOLD) -> list[str]:
    """:func:`save_model`, after removing the graph ``directory/file`` had and its weights file."""
    for stale in directory.glob(f"{file}*"):
        stale.unlink()
    return save_model(model, directory, file, threshold)

"""Tiny decoder exports for three targets, and helpers to run and compare ONNX graphs on the CPU EP."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from fastattn.exporter.pipeline import ExportOptions, export
from fastattn.runtime.manifest import GraphEntry, Manifest
from fastattn.runtime.samples import sample_inputs
from fastattn.targets import Target

WINDOW = 8  # the sliding window of tests.conftest.TINY_DECODER's first layer
# Two shapes: a short prefill, and a decode-sized chunk after a cache whose total length exceeds the window.
SHAPES = {
    "prefill": {"batch": 2, "sequence": 5, "past_sequence": 0},
    "long": {"batch": 1, "sequence": 3 * WINDOW, "past_sequence": 3},
}


@dataclass
class Export:
    target: str
    directory: Path
    graph: GraphEntry

    @property
    def model(self) -> Path:
        return self.directory / self.graph.file


@pytest.fixture(scope="session")
def exports(decoder_export, decoder_checkpoint, tmp_path_factory) -> dict[str, Export]:
    """The tiny decoder exported for cpu (the shared fixture), portable and openvino."""
    _, result = decoder_export
    found = {"cpu": result.output}
    for target in (Target.PORTABLE, Target.OPENVINO):
        out = tmp_path_factory.mktemp("quantize") / target.value
        found[target.value] = export(decoder_checkpoint, ExportOptions(out, target=target, repeats=1)).output
    return {t: Export(t, d, Manifest.load(d).graph()) for t, d in found.items()}


def run(model: Path, graph: GraphEntry, sizes: dict[str, int], seed: int = 0) -> dict[str, np.ndarray]:
    """Every output of ``model`` on CPU EP for sample inputs at ``sizes`` (mask rows padded)."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    feeds = sample_inputs(graph.inputs, sizes, np.random.default_rng(seed), padded=True)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds), strict=True))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def op_counts(model: Path) -> Counter:
    return Counter(n.op_type for n in onnx.load(model, load_external_data=False).graph.node)

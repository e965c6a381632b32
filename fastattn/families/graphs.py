"""What gets exported: one or more graphs, each a module with declared inputs and outputs.

A fastattn encoder or decoder is one graph (``model``); an encoder-decoder is two
(``encoder``: run once per input; ``decoder``: run per step with its cache). A foreign
model is one graph whose inputs the user declares on the command line. Every graph says
how to make sample inputs at given dimension sizes, so capture, validation and bench
all draw from the same description.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np
import torch

from fastattn.runtime import dims
from fastattn.runtime.manifest import CachePair, GraphEntry, TensorSpec
from fastattn.runtime.samples import sample_inputs

# Sizes used to trace dynamic dims: all different and >= 2, so torch.export specialises none.
DEFAULT_TRACE_SIZES = {"batch": 2, "sequence": 9, "past_sequence": 5, "encoder_sequence": 7}
FALLBACK_TRACE_SIZE = 6


@dataclass
class GraphDef:
    name: str
    module: torch.nn.Module | torch.export.ExportedProgram
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    cache: list[CachePair] = field(default_factory=list)
    trace_sizes: dict[str, int] = field(default_factory=dict)
    # What validation compares against: the user's own module when ``module`` is a
    # rewritten copy of it (foreign attention declared as the fastattn op).
    reference: torch.nn.Module | torch.export.ExportedProgram | None = None

    @property
    def file(self) -> str:
        return f"{self.name}.onnx"

    def dims(self) -> list[str]:
        """Named dynamic dims in order of first appearance (``a+b`` and ``min(a,K)`` are made of them)."""
        seen: dict[str, None] = {}
        for spec in self.inputs:
            for d in spec.dims():
                for name in dims.names(d):
                    seen.setdefault(name)
        return list(seen)

    def trace_size(self, dim: str) -> int:
        return self.trace_sizes.get(dim, DEFAULT_TRACE_SIZES.get(dim, FALLBACK_TRACE_SIZE))

    def sizes(self, overrides: dict[str, int] | None = None) -> dict[str, int]:
        sizes = {d: self.trace_size(d) for d in self.dims()}
        sizes.update(overrides or {})
        return sizes

    def sample(self, sizes: dict[str, int], seed: int = 0, padded: bool = False) -> tuple[torch.Tensor, ...]:
        """Sample inputs as torch tensors, in input order."""
        arrays = sample_inputs(self.inputs, sizes, np.random.default_rng(seed), padded=padded)
        return tuple(torch.from_numpy(arrays[s.name]) for s in self.inputs)

    def entry(self) -> GraphEntry:
        return GraphEntry(self.name, self.file, list(self.inputs), list(self.outputs), list(self.cache))


@contextlib.contextmanager
def mha_fastpath(enabled: bool):
    """nn.TransformerEncoderLayer's fast path would bypass attention modules; turn it off while tracing."""
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(enabled)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)

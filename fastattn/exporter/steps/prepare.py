"""prepare: the model file's family makes its graphs; the manifest gets its first records."""

from __future__ import annotations

from fastattn.exporter.state import ExportState
from fastattn.exporter.steps import Step
from fastattn.exporter.validate import default_cases, torch_runner
from fastattn.families.base import PrepareRequest
from fastattn.families.registry import prepare
from fastattn.runtime.manifest import Manifest
from fastattn.runtime.records import KvBuffer
from fastattn.versions import installed

KV_BUFFER = (
    "GroupQueryAttention without its padding guard, rotary folded into it, as ONNX Runtime GenAI "
    "runs decoders: exact for unpadded rows; the runtime binds one buffer of max_length positions "
    "per cache as both past and present, so a step writes one position instead of copying the "
    "cache (6x512 int4: 0.479 vs 0.625 ms/token, benchmarks/results/gqa_fast_path.md)"
)


class Prepare(Step):
    name = "prepare"

    def run(self, state: ExportState) -> None:
        options = state.options
        state.progress(f"loading {state.source}")
        with state.timed("load"):
            request = PrepareRequest(options.inputs, options.allow_pickle, options.kv_buffer, options.task, options.code)
            prepared = prepare(state.source, request)
        fast = prepared.fast_decode
        state.prepared = prepared
        state.manifest = Manifest(
            arch=prepared.arch, source=prepared.source, graphs=[g.entry() for g in prepared.graphs],
            family=prepared.family, dims=prepared.dims, precision=options.precision, config=prepared.config,
            max_length=prepared.max_length, versions=installed(),
            kv_buffer=KvBuffer(fast.max_positions, "unpadded", KV_BUFFER) if fast is not None else None,
            hf=prepared.hf,
        )  # fmt: skip
        state.graphs = prepared.graphs
        state.expected_fusions = prepared.expected_fusions
        state.references = {g.name: torch_runner(g) for g in prepared.graphs}
        cases = [c for g in prepared.graphs for c in default_cases(g, prepared.longest_window, prepared.max_length)]
        state.cases = [c for c in cases if not c.padded] if fast is not None else cases  # kv-buffer: unpadded rows
        state.notes += prepared.notes
        if options.quantize is not None:
            options.quantize.check(state.manifest)

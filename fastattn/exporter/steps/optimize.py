"""optimize: the target's passes over each graph (lowering, inlining, fusion, rotary folding)."""

from __future__ import annotations

import onnx_ir as ir

from fastattn.exporter.passes import FoldRotary, Fuse, InlineFunctions, LowerAttention, optimization_passes, run_passes
from fastattn.exporter.state import ExportState
from fastattn.exporter.steps import Step
from fastattn.runtime.manifest import GraphEntry, bounded_cache
from fastattn.runtime.records import SessionSettings
from fastattn.targets import Target

MEMORY_PATTERN = (
    "ONNX Runtime plans a memory pattern per input shape and keeps it; a decoder's shapes change "
    "every step, so a windowed decoder, whose caches stop growing, would still grow by one pattern "
    "a step (a 4-layer global+local decoder: +20 MB RSS over 8k steps with them, 0 without). "
    "Full-attention caches grow anyway, and decode ~5% faster with them."
)


class Optimize(Step):
    name = "optimize"

    def run(self, state: ExportState) -> None:
        options, manifest = state.options, state.manifest
        fast = state.prepared.fast_decode if state.prepared is not None else None
        manifest.target = options.target
        manifest.session = session_settings(options.target, manifest.graphs)
        if options.target is Target.PORTABLE:
            return
        for entry in manifest.graphs:
            model = state.models.get(entry.name) or ir.load(state.directory / entry.file)
            state.models[entry.name] = model
            state.progress(f"lowering {entry.file} for {options.target.value}")
            passes = optimization_passes(options.lowering(fast, entry.name), state.expected_fusions.get(entry.name),
                                         options.allow_fusion_shortfall)  # fmt: skip
            with state.timed(f"optimize {entry.name}"):
                run_passes(model, passes)
            self._record(state, entry.name, passes)

    @staticmethod
    def _record(state: ExportState, graph: str, passes: list) -> None:
        inlined = any(isinstance(p, InlineFunctions) for p in passes)
        counts: dict[str, int] = {}
        for p in passes:
            if isinstance(p, LowerAttention):
                p.annotate(state.manifest.attention, graph, inlined)
                state.choices[graph] = p.choices
            elif isinstance(p, Fuse) and p.report is not None:
                counts.update(p.report.counts)
                state.notes += [f"{graph}: {note}" for note in p.report.notes]
            elif isinstance(p, FoldRotary):
                counts["gqa_rotary"] = p.folded
        state.manifest.fusions[graph] = counts


def session_settings(target: Target, graphs: list[GraphEntry]) -> SessionSettings:
    """How sessions of this export should be built: disabled optimizers, memory patterns off."""
    bounded = [g.name for g in graphs if bounded_cache(g)]
    return SessionSettings(
        disabled_optimizers=list(target.spec.disabled_optimizers), why=target.spec.disabled_why,
        memory_pattern_off=bounded, memory_pattern_why=MEMORY_PATTERN if bounded else "",
    )  # fmt: skip

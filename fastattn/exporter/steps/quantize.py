"""quantize: onnxruntime's quantizers on the staged graphs, gated on task accuracy, then validated again."""

from __future__ import annotations

from fastattn.exporter.state import ExportState
from fastattn.exporter.steps import Step
from fastattn.exporter.steps.validate import Validate


class Quantize(Step):
    name = "quantize"

    def run(self, state: ExportState) -> None:
        step = state.options.quantize
        if step is None or (state.validation is not None and not state.validation.passed):
            return
        prepared = state.prepared
        with state.timed("quantize"):
            report = step.run(
                state.directory, state.manifest, prepared.eval_set if prepared else None,
                state.references if prepared else None,  # PyTorch's figures beside the float model's
                state.options.threads, state.progress,
            )  # fmt: skip
        state.manifest.quantization = report.record()
        state.manifest.precision = step.precision
        if not report.passed:
            state.gate_failure = report.failure_line()
            return
        state.precision = step.precision
        Validate().run(state)

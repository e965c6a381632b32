"""validate: the staged graphs against their references (PyTorch, or the export they came from)."""

from __future__ import annotations

from fastattn.exporter.state import ExportState
from fastattn.exporter.steps import Step
from fastattn.exporter.validate import validate
from fastattn.runtime.session import ExportedModel


class Validate(Step):
    name = "validate"

    def run(self, state: ExportState) -> None:
        state.progress(f"validating against {state.reference_label} ({len(state.cases)} cases)")
        with state.timed("validate"):
            exported = ExportedModel.from_manifest(state.directory, state.manifest, "cpu", state.options.threads)
            candidates = {g.name: exported.graph(g.name).run for g in state.graphs}
            result = validate(state.graphs, candidates, state.cases, state.precision, state.options.tolerance,
                              references=state.references)  # fmt: skip
        result.against = state.reference_label
        state.validation = result
        state.manifest.validation = result.record()

"""place: where each node runs on the target's provider, checked where the target asks for it
(OpenVINO EP, which lives in its own environment and silently leaves nodes to the CPU EP)."""

from __future__ import annotations

from fastattn.exporter.state import ExportState
from fastattn.exporter.steps import Step
from fastattn.runtime.environments import check_placement
from fastattn.runtime.records import PlacementRecord


class Place(Step):
    name = "place"

    def run(self, state: ExportState) -> None:
        target = state.options.target
        if not target.spec.check_placement:
            return
        state.progress(f"checking node placement on {target.spec.provider}")
        with state.timed("placement"):
            placements, where = check_placement(state.directory, target.spec.provider, state.manifest)
        state.manifest.placement = PlacementRecord(where, {p.graph: p for p in placements})

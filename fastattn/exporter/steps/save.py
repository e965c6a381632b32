"""save: each graph into the staging directory (weights beside it when large); its opsets recorded."""

from __future__ import annotations

from fastattn.exporter.state import ExportState
from fastattn.exporter.steps import Step
from fastattn.onnx_files import replace_model


class Save(Step):
    name = "save"

    def run(self, state: ExportState) -> None:
        for entry in state.manifest.graphs:
            model = state.models.get(entry.name)
            if model is None:
                continue
            # an earlier export's graph may be there, being replaced
            replace_model(model, state.directory, entry.file, state.options.external_data_threshold)
            state.manifest.opsets[entry.name] = dict(model.opset_imports)

"""open_export: an earlier export becomes the starting point, and the reference its rework is validated against."""

from __future__ import annotations

import copy
import shutil

import onnx_ir as ir

from fastattn.exporter.state import ExportState
from fastattn.exporter.steps import Step
from fastattn.exporter.validate import default_cases
from fastattn.families.graphs import GraphDef
from fastattn.families.registry import by_name
from fastattn.outdir import written_files
from fastattn.runtime.manifest import Manifest
from fastattn.runtime.session import ExportedModel


class OpenExport(Step):
    name = "open"

    def __init__(self, load_graphs: bool = False, references: bool = True):
        self.load_graphs = load_graphs  # the graphs are rewritten (optimize), not only replaced by files
        self.references = references  # the graphs will be validated against the earlier export's

    def run(self, state: ExportState) -> None:
        directory = state.source
        earlier = Manifest.load(directory)
        for name in written_files(directory) or []:
            path = directory / name
            if path.is_file() and not path.is_symlink():
                shutil.copy2(path, state.directory / name)
        state.manifest = copy.deepcopy(earlier)
        if state.options.quantize is not None:
            state.options.quantize.check(state.manifest)
        state.graphs = [GraphDef(g.name, None, g.inputs, g.outputs, g.cache) for g in earlier.graphs]
        state.expected_fusions = by_name(earlier.family).expected_fusions(earlier)
        if self.references:
            reference = ExportedModel.from_manifest(directory, earlier, "cpu", state.options.threads)
            state.references = {g.name: reference.graph(g.name).run for g in earlier.graphs}
        state.reference_label = f"the export it came from ({directory.name})"
        longest = max((a.window or a.block for a in earlier.attention), default=0)
        cases = [c for g in state.graphs for c in default_cases(g, longest, earlier.max_length)]
        state.cases = [c for c in cases if not c.padded] if earlier.kv_buffer else cases
        if self.load_graphs:
            state.models = {g.name: ir.load(earlier.path_of(directory, g.file)) for g in earlier.graphs}

"""package: edge packages beside the validated graphs (``--package ort``: ``<graph>.ort`` and the operator
lists of a minimal ONNX Runtime build, validated against the ``.onnx``; see :mod:`fastattn.exporter.ort_format`)."""

from __future__ import annotations

from fastattn.exporter.state import ExportState
from fastattn.exporter.steps import Step


class PackageOrt(Step):
    name = "package"

    def run(self, state: ExportState) -> None:
        if not state.options.package_ort or state.gate_failure or (state.validation and not state.validation.passed):
            return
        from fastattn.exporter.ort_format import build  # noqa: PLC0415  (onnxruntime's tools)

        previous = state.manifest.ort_format
        for stale in previous.files() if previous else []:  # an earlier package of this export, rebuilt
            (state.directory / stale).unlink(missing_ok=True)
        with state.timed("package ort"):
            state.manifest.ort_format = build(state.directory, state.directory, state.manifest,
                                              state.options.threads, state.progress)  # fmt: skip

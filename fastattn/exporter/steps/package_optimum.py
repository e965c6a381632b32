"""package (optimum): Optimum's layout of an encoder-decoder beside its graphs (``--package optimum``:
``encoder_model.onnx`` + ``decoder_model_merged.onnx``, checked against the export's own graphs; see
:mod:`fastattn.exporter.optimum_layout`). Decoders and encoders need none: Optimum opens them as they are."""

from __future__ import annotations

from fastattn.exporter.state import ExportState
from fastattn.exporter.steps import Step


class PackageOptimum(Step):
    name = "package optimum"

    def run(self, state: ExportState) -> None:
        if not state.options.package_optimum or state.gate_failure or (state.validation and not state.validation.passed):
            return
        from fastattn.exporter.optimum_layout import build, needless  # noqa: PLC0415

        why = needless(state.manifest)
        if why:  # asked for on a decoder or encoder (they open as they are) or a model without config.json
            state.notes.append(f"--package optimum: nothing written; {why}")
            return
        previous = state.manifest.optimum
        for stale in previous.files if previous else []:  # an earlier package of this export, rebuilt
            (state.directory / stale).unlink(missing_ok=True)
        state.progress("writing Optimum's encoder-decoder layout")
        with state.timed("package optimum"):
            state.manifest.optimum = build(state.directory, state.directory, state.manifest, state.options.threads)

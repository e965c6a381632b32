"""``export``, ``reoptimize``, ``requantize``: three compositions of the same steps; and ``revalidate``.

    export      prepare ─► capture ─► optimize ─► save ─► place ─► validate ─► quantize ─► package ─► finish
    reoptimize  open ─► optimize ─► save ─► place ─► validate (against the portable export) ─► finish
    requantize  open ─► quantize (validated against the float export) ─► finish
    repackage   open ─► package (the .ort validated against the .onnx; Optimum's layout against the graphs) ─► finish

Every run writes into a staging directory beside the destination (holding the destination's
lock), and the manifest is written once, by ``finish``, after validation. Nothing reaches the
destination unless validation (and a quantization gate) passed: a failing run is kept as
``<destination>.rejected`` with its report, and raises :class:`ValidationFailed`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fastattn.errors import InputError, ValidationFailed
from fastattn.exporter import report
from fastattn.exporter.lowering.measure import ShapeCase
from fastattn.exporter.options import ExportOptions
from fastattn.exporter.state import ExportResult, ExportState, Progress
from fastattn.exporter.steps import Step
from fastattn.exporter.steps.capture import Capture
from fastattn.exporter.steps.finish import Finish, failure_line
from fastattn.exporter.steps.open_export import OpenExport
from fastattn.exporter.steps.optimize import Optimize
from fastattn.exporter.steps.package import PackageOrt
from fastattn.exporter.steps.package_optimum import PackageOptimum
from fastattn.exporter.steps.place import Place
from fastattn.exporter.steps.prepare import Prepare
from fastattn.exporter.steps.quantize import Quantize
from fastattn.exporter.steps.save import Save
from fastattn.exporter.steps.validate import Validate
from fastattn.exporter.validate import Tolerance, default_cases, torch_runner, validate
from fastattn.families.base import PrepareRequest
from fastattn.families.registry import prepare
from fastattn.files import write_atomic
from fastattn.outdir import Staging
from fastattn.runtime.manifest import Manifest, Precision
from fastattn.runtime.session import ExportedModel
from fastattn.targets import Target

__all__ = ["ExportOptions", "ExportResult", "export", "reoptimize", "repackage", "requantize", "revalidate"]

log = logging.getLogger(__name__)

EXPORT: tuple[Step, ...] = (Prepare(), Capture(), Optimize(), Save(), Place(), Validate(), Quantize(), PackageOrt(),
                               PackageOptimum())  # fmt: skip
REOPTIMIZE: tuple[Step, ...] = (OpenExport(load_graphs=True), Optimize(), Save(), Place(), Validate())
REQUANTIZE: tuple[Step, ...] = (OpenExport(), Quantize())
REPACKAGE: tuple[Step, ...] = (OpenExport(references=False), PackageOrt(), PackageOptimum())


def _run(steps: tuple[Step, ...], state: ExportState) -> ExportResult:
    for step in steps:
        log.debug("step %s", step.name)
        step.run(state)
    finish = Finish()
    finish.run(state)
    return finish.result


def _progress(progress: Progress | None) -> Progress:
    return progress or (lambda message: log.info(message))


def export(model_path: str | Path, options: ExportOptions, progress: Progress | None = None) -> ExportResult:
    """Export, validate and package ``model_path`` into ``options.output``."""
    model_path = Path(model_path)
    with Staging(options.output, options.force, options.files_read(model_path)) as staging:
        state = ExportState(options, staging, _progress(progress), options.precision, model_path,
                            untouched=f"nothing was written to {options.output}")  # fmt: skip
        return _run(EXPORT, state)


def reoptimize(
    directory: str | Path,
    target: Target,
    profile: tuple[ShapeCase, ...] = (),
    only: str | None = None,
    allow_fusion_shortfall: bool = False,
    threads: int | None = None,
    progress: Progress | None = None,
    lowering_plan: Path | None = None,
) -> ExportResult:
    """Lower a portable export for ``target`` in place, validated against the portable graphs it came from."""
    directory = Path(directory)
    manifest = Manifest.load(directory)
    if manifest.target is not Target.PORTABLE:
        raise InputError(f"{directory} was already lowered for {manifest.target.value!r}",
                         f"re-export from the model with --target {target.value} (or --target portable, then "
                         "optimize)")  # fmt: skip
    options = ExportOptions(directory, target=target, profile=profile, only=only, threads=threads,
                            allow_fusion_shortfall=allow_fusion_shortfall, lowering_plan=lowering_plan)  # fmt: skip
    with Staging(directory, replace_self=True, inputs=options.files_read(None)) as staging:
        state = ExportState(options, staging, _progress(progress), manifest.precision, directory,
                            untouched=f"{directory} is unchanged")  # fmt: skip
        state.notes.append(f"lowered from the portable export in {directory.name}")
        return _run(REOPTIMIZE, state)


def requantize(
    directory: str | Path,
    quantize,
    output: str | Path | None = None,
    force: bool = False,
    threads: int | None = None,
    progress: Progress | None = None,
) -> ExportResult:
    """Quantize a float export, gated against its float graphs; written to ``output`` (default: in place)."""
    directory = Path(directory)
    manifest = Manifest.load(directory)
    if manifest.precision is not Precision.FP32:
        raise InputError(f"{directory} is already quantized ({manifest.precision.value})",
                         "quantize a float export (export again without --quantize)")  # fmt: skip
    destination = Path(output) if output is not None else directory
    in_place = destination.absolute() == directory.absolute()
    options = ExportOptions(destination, force=force, threads=threads, target=manifest.target, quantize=quantize)
    with Staging(destination, force, options.files_read(directory), replace_self=in_place) as staging:
        state = ExportState(options, staging, _progress(progress), manifest.precision, directory,
                            untouched=f"{destination} is unchanged")  # fmt: skip
        state.notes.append(f"quantized from the float export in {directory.name}")
        return _run(REQUANTIZE, state)


def repackage(directory: str | Path, ort: bool = True, threads: int | None = None,
              progress: Progress | None = None, optimum: bool = False) -> ExportResult:  # fmt: skip
    """Add packages (``ort``: the ORT format; ``optimum``: Optimum's encoder-decoder layout) to an export, in place."""
    directory = Path(directory)
    manifest = Manifest.load(directory)
    if not ort and not optimum:
        raise InputError("no package named", "pass --ort or --optimum")
    if optimum:
        from fastattn.exporter.optimum_layout import needless  # noqa: PLC0415

        why = needless(manifest)
        if why:
            raise InputError(f"no Optimum layout for {directory.name}: {why}",
                             "pass --optimum for Hugging Face encoder-decoders only")  # fmt: skip
    options = ExportOptions(directory, threads=threads, target=manifest.target, package_ort=ort,
                            package_optimum=optimum)  # fmt: skip
    with Staging(directory, replace_self=True) as staging:
        state = ExportState(options, staging, _progress(progress), manifest.precision, directory,
                            untouched=f"{directory} is unchanged")  # fmt: skip
        return _run(REPACKAGE, state)


def revalidate(
    model_path: str | Path,
    output: str | Path,
    allow_pickle: bool = False,
    precision: Precision | None = None,
    tolerance: Tolerance | None = None,
    threads: int | None = None,
    code: Path | None = None,
) -> ExportResult:
    """Re-run the comparison of an existing export against its model; update its manifest and report."""
    output = Path(output)
    manifest = Manifest.load(output)
    inputs = tuple(manifest.graphs[0].inputs) if manifest.config is None and manifest.hf is None else ()
    task = manifest.hf.task if manifest.hf is not None else None
    request = PrepareRequest(inputs, allow_pickle, manifest.kv_buffer is not None, task, code)
    prepared = prepare(Path(model_path), request)
    exported = ExportedModel.from_manifest(output, manifest, "cpu", threads)
    cases = [c for g in prepared.graphs for c in default_cases(g, prepared.longest_window, prepared.max_length)]
    if manifest.kv_buffer is not None:
        cases = [c for c in cases if not c.padded]
    result = validate(prepared.graphs, {g.name: exported.graph(g.name).run for g in prepared.graphs}, cases,
                      precision or manifest.precision, tolerance,
                      references={g.name: torch_runner(g) for g in prepared.graphs})  # fmt: skip
    manifest.validation = result.record()
    text = report.render(manifest, None, prepared.notes)
    write_atomic(output / "report.md", text.encode())
    manifest.save(output)
    if not result.passed:
        raise ValidationFailed(failure_line(result), f"see {output / 'report.md'}")
    return ExportResult(output, manifest, result, {}, text)

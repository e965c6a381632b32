"""Work on an existing export: lower a portable one for a target (``fastattn optimize``), quantize a
float one (``fastattn quantize``). Each is validated against the export it came from and written
through a staging directory, like an export.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import onnx_ir as ir

from fastattn.errors import InputError
from fastattn.exporter.graphs import GraphDef
from fastattn.exporter.lowering.choose import LoweringOptions
from fastattn.exporter.lowering.measure import ShapeCase
from fastattn.exporter.lowering.target import Target
from fastattn.exporter.model_graphs import max_length
from fastattn.exporter.optimize import optimize
from fastattn.exporter.package import Staging, check_destination, save_model
from fastattn.exporter.pipeline import ExportResult, Progress, finish, session_settings
from fastattn.exporter.quantization import QuantizeStep
from fastattn.exporter.validate import Precision, ValidationResult, default_cases, validate
from fastattn.models.config import ModelConfig
from fastattn.runtime import load as load_exported
from fastattn.runtime.manifest import Manifest

log = logging.getLogger(__name__)


def reoptimize(
    directory: str | Path,
    target: Target,
    profile: tuple[ShapeCase, ...] = (),
    only: str | None = None,
    allow_fusion_shortfall: bool = False,
    threads: int | None = None,
    progress: Progress | None = None,
) -> ExportResult:
    """Lower a portable export for ``target``, validated against the portable graphs it came from."""
    step = progress or (lambda message: log.info(message))
    directory = Path(directory)
    manifest = Manifest.load(directory)
    if manifest.target != Target.PORTABLE.value:
        raise InputError(
            f"{directory} was already lowered for {manifest.target!r}",
            f"re-export from the model with --target {target.value} (or --target portable, then optimize)",
        )
    clock = time.perf_counter()
    with Staging(directory) as staging:
        _copy_files(directory, staging.path)
        fusions, notes = {}, []
        for entry in manifest.graphs:
            step(f"lowering {entry.file} for {target.value}")
            model = ir.load(directory / entry.file)
            optimized = optimize(model, LoweringOptions(target, profile, only, threads=threads), None,
                                 allow_fusion_shortfall)  # fmt: skip
            optimized.annotate(manifest.attention, entry.name)
            fusions[entry.name] = optimized.fusions
            notes += [f"{entry.name}: {note}" for note in optimized.fusion_notes]
            for stale in staging.path.glob(f"{entry.file}*"):
                stale.unlink()
            save_model(model, staging.path, entry.file)
        manifest.target, manifest.fusions = target.value, fusions
        manifest.session = session_settings(target, manifest.graphs)
        manifest.opsets = dict(model.opset_imports)
        step("validating against the portable graphs")
        result = _validate_against(directory, staging.path, manifest, Precision(manifest.precision), threads)
        timings = {"total": time.perf_counter() - clock}
        notes = [f"lowered from the portable export in {directory}", *notes]
        return finish(staging, manifest, result, timings, notes, f"{directory} is unchanged")


def requantize(
    directory: str | Path,
    quantize: QuantizeStep,
    output: str | Path | None = None,
    force: bool = False,
    threads: int | None = None,
    progress: Progress | None = None,
) -> ExportResult:
    """Quantize a float export, gated against its float graphs; written to ``output`` (default: in place)."""
    step = progress or (lambda message: log.info(message))
    directory = Path(directory)
    manifest = Manifest.load(directory)
    if manifest.precision != Precision.FP32.value:
        raise InputError(
            f"{directory} is already quantized ({manifest.precision})",
            "quantize a float export (export again without --quantize)",
        )
    destination = Path(output) if output is not None else directory
    if destination.resolve() != directory.resolve():
        check_destination(destination, force)
    clock = time.perf_counter()
    with Staging(destination) as staging:
        _copy_files(directory, staging.path)
        quantized = quantize.run(staging.path, None, None, threads, step)
        manifest.quantization, manifest.precision = quantized.to_dict(), quantize.precision.value
        step("validating the quantized model against the float graphs")
        result = _validate_against(directory, staging.path, manifest, quantize.precision, threads)
        timings = {"total": time.perf_counter() - clock}
        notes = [f"quantized from the float export in {directory}"]
        gate_failure = None if quantized.passed else quantized.failure_line()
        return finish(staging, manifest, result, timings, notes, f"{destination} is unchanged", gate_failure)


def _copy_files(source: Path, destination: Path) -> None:
    for path in source.iterdir():
        if path.is_file():
            shutil.copy2(path, destination / path.name)


def _validate_against(
    reference: Path, candidate: Path, manifest: Manifest, precision: Precision, threads: int | None
) -> ValidationResult:
    """Validate the graphs in ``candidate`` against those of an earlier export in ``reference``."""
    graphs = [GraphDef(g.name, None, g.inputs, g.outputs, g.cache) for g in manifest.graphs]
    longest = max((a.window for a in manifest.attention), default=0)
    limit = max_length(ModelConfig.from_dict(manifest.config)) if manifest.config else None
    ref, got = (load_exported(d, provider="cpu", threads=threads) for d in (reference, candidate))
    cases = [c for g in graphs for c in default_cases(g, longest, limit)]
    if manifest.kv_buffer:  # the path takes unpadded rows only (as export's run_validation)
        cases = [c for c in cases if not c.padded]
    return validate(
        graphs,
        {g.name: got.graph(g.name).run for g in graphs},
        cases,
        precision,
        references={g.name: ref.graph(g.name).run for g in graphs},
    )

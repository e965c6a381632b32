"""``fastattn export`` and ``fastattn validate`` as library calls.

    load -> graphs -> capture -> lower + fuse -> save (staging dir) -> validate
         -> [quantize -> accuracy gate -> validate] -> manifest + report -> commit

Nothing reaches the destination directory unless validation passed; a failing export is
kept as ``<destination>.rejected`` with its report, and raises :class:`ValidationFailed`.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import onnx_ir as ir

from fastattn.attention.onnx_function import DOMAIN, OP_TYPE
from fastattn.attention.spec import AttentionSpec
from fastattn.errors import InputError, ValidationFailed
from fastattn.exporter import report
from fastattn.exporter.accuracy import EVAL_FILE, save_npz
from fastattn.exporter.capture import DEFAULT_OPSET, capture, module_path
from fastattn.exporter.environments import check_placement
from fastattn.exporter.lowering.choose import FastDecode, LoweringOptions
from fastattn.exporter.lowering.measure import ShapeCase
from fastattn.exporter.lowering.target import SKIP_LAYER_NORM_FUSION, Target
from fastattn.exporter.optimize import optimize
from fastattn.exporter.package import (
    EXTERNAL_DATA_THRESHOLD,
    Staging,
    check_destination,
    save_model,
    versions,
)
from fastattn.exporter.prepare import Prepared, prepare
from fastattn.exporter.validate import (
    Precision,
    Tolerance,
    ValidationResult,
    default_cases,
    torch_runner,
    validate,
)
from fastattn.models.config import ModelConfig
from fastattn.runtime import load as load_exported
from fastattn.runtime.manifest import AttentionLayer, GraphEntry, Manifest, TensorSpec, bounded_cache

if TYPE_CHECKING:
    from fastattn.exporter.quantization import QuantizeStep

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ExportOptions:
    output: Path
    inputs: tuple[TensorSpec, ...] = ()  # foreign models only; fastattn models declare their own
    allow_pickle: bool = False
    opset: int = DEFAULT_OPSET
    precision: Precision = Precision.FP32
    tolerance: Tolerance | None = None
    force: bool = False
    external_data_threshold: int = EXTERNAL_DATA_THRESHOLD
    threads: int | None = None  # ONNX Runtime intra-op threads (measurement and validation)
    target: Target = Target.CPU
    profile: tuple[ShapeCase, ...] = ()  # shapes lowering candidates are timed at; () = defaults
    only: str | None = None  # force one lowering rule wherever it applies
    repeats: int = 10  # timed runs per lowering candidate and shape
    allow_fusion_shortfall: bool = False
    quantize: QuantizeStep | None = None  # quantize after lowering and fusion, gated on accuracy
    # Decoders: GenAI's decode path (unguarded GQA with rotary inside; past and present can be
    # one buffer). Rows must be unpadded; sequences at most max_positions long.
    kv_buffer: bool = False
    task: str | None = None  # Hugging Face checkpoints: Optimum's task name; None = from the architecture
    code: Path | None = None  # the .py file defining a pickled model's classes (needs allow_pickle)


@dataclass
class ExportResult:
    output: Path
    manifest: Manifest
    validation: ValidationResult
    timings: dict[str, float] = field(default_factory=dict)
    report: str = ""


def export(model_path: str | Path, options: ExportOptions, progress: Progress | None = None) -> ExportResult:
    """Export, validate and package ``model_path`` into ``options.output``."""
    step = progress or (lambda message: log.info(message))
    destination = Path(options.output)
    check_destination(destination, options.force)
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    step(f"loading {model_path}")
    prepared = prepare(Path(model_path), options.inputs, options.allow_pickle, options.kv_buffer, options.task,
                       options.code)  # fmt: skip
    fast_decode = _fast_decode(prepared, options) if options.kv_buffer else None
    timings["load"] = time.perf_counter() - clock

    with Staging(destination) as staging:
        layers: list[AttentionLayer] = []
        notes = list(prepared.notes)
        fusions: dict[str, dict[str, int]] = {}
        opsets: dict[str, int] = {}
        for graph in prepared.graphs:
            step(f"capturing {graph.file}")
            t = time.perf_counter()
            model = capture(graph, options.opset)
            timings[f"capture {graph.name}"] = time.perf_counter() - t
            graph_layers = attention_layers(graph.name, model)
            if options.target is not Target.PORTABLE:
                step(f"lowering {graph.file} for {options.target.value}")
                t = time.perf_counter()
                lowering = LoweringOptions(options.target, options.profile, options.only, options.repeats, options.threads,
                                           fast_decode)  # fmt: skip
                expected = prepared.expected_fusions.get(graph.name)
                optimized = optimize(model, lowering, expected, options.allow_fusion_shortfall)
                optimized.annotate(graph_layers, graph.name)
                fusions[graph.name] = optimized.fusions
                notes += [f"{graph.name}: {note}" for note in optimized.fusion_notes]
                timings[f"optimize {graph.name}"] = time.perf_counter() - t
            layers += graph_layers
            opsets = dict(model.opset_imports)
            save_model(model, staging.path, graph.file, options.external_data_threshold)

        manifest = Manifest(
            arch=prepared.arch,
            source=prepared.source,
            graphs=[g.entry() for g in prepared.graphs],
            attention=layers,
            dims=prepared.dims,
            opsets=opsets,
            target=options.target.value,
            fusions=fusions,
            precision=options.precision.value,
            config=prepared.config,
            session=session_settings(options.target, [g.entry() for g in prepared.graphs]),
            versions=versions(),
            kv_buffer=None if fast_decode is None else {
                "max_length": fast_decode.max_positions, "rows": "unpadded", "why": KV_BUFFER},
            hf=prepared.hf,
        )  # fmt: skip
        manifest.save(staging.path)
        if options.target is Target.OPENVINO:
            step("checking node placement on OpenVINO")
            manifest.placement = placement_summary(staging.path, options.target)
            manifest.save(staging.path)

        step("validating against PyTorch")
        t = time.perf_counter()
        result = run_validation(prepared, staging.path, options.precision, options.tolerance, options.threads)
        timings["validate"] = time.perf_counter() - t
        gate_failure = None
        if options.quantize is not None and result.passed:
            t = time.perf_counter()
            references = {g.name: torch_runner(g) for g in prepared.graphs}
            quantized = options.quantize.run(staging.path, prepared.eval_set, references, options.threads, step)
            timings["quantize"] = time.perf_counter() - t
            manifest.quantization = quantized.to_dict()
            manifest.precision = options.quantize.precision.value
            if quantized.passed:
                step("validating the quantized model against PyTorch")
                t = time.perf_counter()
                precision = options.quantize.precision
                result = run_validation(prepared, staging.path, precision, options.tolerance, options.threads)
                timings["validate quantized"] = time.perf_counter() - t
            else:
                gate_failure = quantized.failure_line()
        if prepared.eval_set is not None:
            save_npz(prepared.eval_set, staging.path / EVAL_FILE)
        if prepared.tokenizer is not None:
            (staging.path / "tokenizer.json").write_text(json.dumps(prepared.tokenizer, indent=2) + "\n")
        for name, source in prepared.files.items():  # a Hugging Face checkpoint's config and tokenizer
            shutil.copy2(source, staging.path / name)
        timings["total"] = time.perf_counter() - clock
        return finish(staging, manifest, result, timings, notes, f"nothing was written to {destination}", gate_failure)


def revalidate(
    model_path: str | Path,
    output: str | Path,
    allow_pickle: bool = False,
    precision: Precision | None = None,
    tolerance: Tolerance | None = None,
    threads: int | None = None,
    code: Path | None = None,
) -> ExportResult:
    """Re-run the comparison of an existing export against its PyTorch model; update manifest and report."""
    output = Path(output)
    manifest = Manifest.load(output)
    graph_inputs = tuple(manifest.graphs[0].inputs) if manifest.config is None and manifest.hf is None else ()
    task = (manifest.hf or {}).get("task")
    prepared = prepare(Path(model_path), graph_inputs, allow_pickle, task=task, code=code)
    precision = precision or Precision(manifest.precision)
    result = run_validation(prepared, output, precision, tolerance, threads)
    manifest.validation = result.to_dict()
    manifest.save(output)
    text = report.render(manifest, None, prepared.notes)
    (output / "report.md").write_text(text)
    if not result.passed:
        raise ValidationFailed(_failure_line(result), f"see {output / 'report.md'}")
    return ExportResult(output, manifest, result, {}, text)


def run_validation(
    prepared: Prepared, directory: Path, precision: Precision, tolerance: Tolerance | None, threads: int | None
) -> ValidationResult:
    exported = load_exported(directory, provider="cpu", threads=threads)
    cases = [c for g in prepared.graphs for c in default_cases(g, prepared.longest_window, prepared.max_length)]
    if exported.manifest.kv_buffer:  # the path takes unpadded rows only (GQA's convention, unguarded)
        cases = [c for c in cases if not c.padded]
    candidates = {g.name: exported.graph(g.name).run for g in prepared.graphs}
    return validate(prepared.graphs, candidates, cases, precision, tolerance)


KV_BUFFER = (
    "GroupQueryAttention without its padding guard, rotary folded into it, as ONNX Runtime GenAI "
    "runs decoders: exact for unpadded rows; the runtime binds one buffer of max_length positions "
    "per cache as both past and present, so a step writes one position instead of copying the "
    "cache (6x512 int4: 0.479 vs 0.625 ms/token, benchmarks/results/gqa_fast_path.md)"
)


def _fast_decode(prepared: Prepared, options: ExportOptions) -> FastDecode:
    if options.target is not Target.CPU:
        raise InputError(f"--kv-buffer is a CPU path (GroupQueryAttention), not for target {options.target.value}",
                         "export with -t cpu, or without --kv-buffer")  # fmt: skip
    cfg = ModelConfig.from_dict(prepared.config)
    return FastDecode(cfg.rope_theta, cfg.head_size, cfg.max_positions, cfg.rope_scaling)


MEMORY_PATTERN = (
    "ONNX Runtime plans a memory pattern per input shape and keeps it; a decoder's shapes change "
    "every step, so a windowed decoder, whose caches stop growing, would still grow by one pattern "
    "a step (a 4-layer global+local decoder: +20 MB RSS over 8k steps with them, 0 without). "
    "Full-attention caches grow anyway, and decode ~5% faster with them."
)


def session_settings(target: Target, graphs: list[GraphEntry]) -> dict:
    """How sessions of this export should be built: disabled optimizers, memory patterns off."""
    settings: dict = {}
    if target.disabled_optimizers:
        settings.update(disabled_optimizers=list(target.disabled_optimizers), why=SKIP_LAYER_NORM_FUSION)
    bounded = [g.name for g in graphs if bounded_cache(g)]
    if bounded:
        settings.update(memory_pattern_off=bounded, memory_pattern_why=MEMORY_PATTERN)
    return settings


def placement_summary(directory: Path, target: Target) -> dict:
    """Where the nodes of each graph run on the target provider (possibly in its own environment)."""
    placements, where = check_placement(directory, target.provider)
    return {"checked_with": where, "graphs": {p.graph: asdict(p) for p in placements}}


def attention_layers(graph: str, model: ir.Model) -> list[AttentionLayer]:
    """The ``fastattn::Attention`` nodes of a captured model, with their attributes."""
    layers = []
    for node in model.graph:
        if node.domain != DOMAIN or node.op_type != OP_TYPE:
            continue
        attr = {name: a.value for name, a in node.attributes.items()}
        spec = AttentionSpec(
            attr["num_heads"], attr["kv_num_heads"], bool(attr.get("causal", 0)),
            attr.get("window", 0), attr.get("global_tokens", 0), attr.get("scale", 0.0),
        )  # fmt: skip
        layers.append(
            AttentionLayer(
                graph, module_path(node), node.name, spec.kind, spec.num_heads, spec.kv_num_heads,
                spec.causal, spec.window, spec.global_tokens, node.overload,
            )  # fmt: skip
        )
    return layers


def _failure_line(result: ValidationResult) -> str:
    failures = result.failures()
    case, out = failures[0]
    more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
    detail = f"max abs error {out.max_abs:.3g}, max rel {out.max_rel:.3g}, cosine {out.cosine:.6f}"
    if out.note:
        detail += f" ({out.note})"
    return (
        f"validation failed: output {out.name!r} of graph {case.graph!r} at {case.name}: {detail}, "
        f"tolerance atol {result.tolerance.atol:g} + rtol {result.tolerance.rtol:g}{more}"
    )


def finish(staging: Staging, manifest: Manifest, result: ValidationResult, timings: dict[str, float],
            notes: list[str], untouched: str, gate_failure: str | None = None) -> ExportResult:  # fmt: skip
    """Record the validation, write the report; commit the staged directory, or keep it as
    ``.rejected`` and raise :class:`ValidationFailed` naming the worst output (or the failed gate)."""
    manifest.validation = result.to_dict()
    manifest.save(staging.path)
    text = report.render(manifest, timings, notes)
    (staging.path / "report.md").write_text(text)
    if gate_failure or not result.passed:
        kept = staging.reject()
        fix = f"see {kept / 'report.md'}; {untouched}"
        if gate_failure:
            fix = f"relax the gate (--max-ppl-increase, --min-cosine, --max-accuracy-drop) or choose another mode; {fix}"
        raise ValidationFailed(gate_failure or _failure_line(result), fix)
    return ExportResult(staging.commit(), manifest, result, timings, text)

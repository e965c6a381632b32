"""The quantize step: quantize every graph of a (staged) export, measure what it cost, gate it.

    float graphs ─► quantize (onnxruntime's tools) ─► figures vs float ONNX and PyTorch ─► gate
                                     ▲                                                      │ fails
                                     └──── keep the most sensitive weights in float ◄───────┘

Sensitivity is measured one weight at a time: the model with only that weight quantized,
scored by how much of the gate it uses up. Weights are then kept in float, most
sensitive first, until the gate passes or nothing is left to keep (then it fails, with
the figures). The search is bounded: it stops at ``QuantizeStep.budget`` seconds (said in
the progress line before it starts, and in the record).

For ``int8`` with ``outlier_channels`` left unset, a failed first attempt is tried again with
:data:`OUTLIER_CHANNELS` input channels of every weight computed in float
(:mod:`fastattn.quantize.outliers`; the channels are found on the calibration data, else on
random samples of the model's inputs, never on the evaluation set), and the search, if still
needed, keeps weights in float on top of that (float channels cost less time than float weights),
unless the second tier came out no closer to the gate than the first. The float graphs are set aside in
a scratch directory inside the staged export for the duration and removed at the end; the
directory holds the quantized graphs when this returns.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from fastattn.errors import InputError
from fastattn.onnx_files import load_in_memory, replace_model
from fastattn.quantize import Mode, QuantOptions, QuantResult, WeightSite, quantize_file, weight_sites
from fastattn.quantize.accuracy import (
    EVAL_FILE,
    EvalSet,
    Runner,
    Task,
    check_eval_set,
    evaluate,
    forward,
    graph_feeds,
    load_npz,
    random_eval_set,
    task_of,
)
from fastattn.quantize.gates import Gate
from fastattn.quantize.modes import MODES
from fastattn.quantize.sites import fold_weight_transposes, match_keep_float
from fastattn.runtime.manifest import Manifest, Precision
from fastattn.runtime.records import AttemptRecord, Figures, QuantizationRecord, WeightRecord
from fastattn.runtime.session import ExportedModel

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
MAX_KEPT_FRACTION = 0.5  # keep at most this share of the weights in float before giving up
SEARCH_BUDGET = 300.0  # seconds the sensitivity search may take (96 real sentences took > 17 min unbounded)
OUTLIER_CHANNELS = 4  # int8's second tier: float input channels per weight (MiniLM: 8 and 16 did no better)
OUTLIER_SEED = 1  # random calibration samples for outlier channels (the random gate data uses seed 0)


@dataclass(frozen=True)
class QuantizeStep:
    """What the quantize step of an export is asked for."""

    options: QuantOptions
    gate: Gate | None = None  # None: the mode's default gate (modes.MODES)
    eval_data: Path | None = None  # .npz; default: the checkpoint's held-out set, else random samples
    calibration: Path | None = None  # .npz for int8-static; default: half of the evaluation set
    budget: float = SEARCH_BUDGET  # seconds for the sensitivity search

    @property
    def effective_gate(self) -> Gate:
        return self.gate or MODES[self.options.mode].gate

    @property
    def precision(self) -> Precision:
        return MODES[self.options.mode].precision

    def check(self, manifest: Manifest) -> None:
        """The user's evaluation and calibration files, read and checked against the graphs before any long
        work (a corrupt file or missing arrays is one line at the start, not after the export)."""
        if self.eval_data is not None:
            check_eval_set(manifest, load_npz(self.eval_data))
        if self.calibration is not None:
            check_eval_set(manifest, load_npz(self.calibration, "calibration"), "calibration")

    def data(self, manifest: Manifest, directory: Path, held_out: EvalSet | None) -> EvalSet:
        """The evaluation set: the user's file, else ``held_out`` (a checkpoint's, or real text the
        model family provides), else ``eval.npz`` in the directory, else random samples."""
        if self.eval_data is not None:
            data = load_npz(self.eval_data)
        elif held_out is not None:
            data = held_out
        elif (directory / EVAL_FILE).is_file():
            data = load_npz(directory / EVAL_FILE)
            data.source = f"held-out data saved with the export ({EVAL_FILE})"
        else:
            data = random_eval_set(manifest)
        return check_eval_set(manifest, data)

    def run(
        self,
        directory: Path,
        manifest: Manifest,
        held_out: EvalSet | None = None,
        references: Mapping[str, Runner] | None = None,
        threads: int | None = None,
        progress: Progress | None = None,
    ) -> QuantizationReport:
        """Quantize the graphs ``manifest`` describes in ``directory`` (see :meth:`data` for the evaluation set)."""
        data = self.data(manifest, directory, held_out)
        calibration = None
        if self.calibration is not None:
            calibration = check_eval_set(manifest, load_npz(self.calibration, "calibration"), "calibration")
        return quantize_directory(directory, manifest, self.options, self.effective_gate, data, calibration,
                                  references, threads, progress, self.budget)  # fmt: skip


@dataclass
class QuantizationReport:
    mode: str
    gate: Gate
    data: str  # where the evaluation set came from
    task: Task
    calibration: str | None = None  # where calibration batches came from (static int8)
    settings: dict = field(default_factory=dict)
    size_before: int = 0
    size_after: int = 0
    figures: dict[str, Figures] = field(default_factory=dict)  # pytorch / float / quantized
    quantized: list[WeightRecord] = field(default_factory=list)  # weight sites quantized
    kept: list[WeightRecord] = field(default_factory=list)  # weight sites kept in float, with the reason
    ops: dict[str, int] = field(default_factory=dict)
    sensitivity: dict[str, float] = field(default_factory=dict)  # graph:node -> share of the gate it uses alone
    attempts: list[AttemptRecord] = field(default_factory=list)
    seconds: float = 0.0
    search_budget: float = SEARCH_BUDGET  # seconds the sensitivity search may take

    @property
    def failures(self) -> list[str]:
        return self.attempts[-1].failures if self.attempts else ["not attempted"]

    @property
    def passed(self) -> bool:
        return bool(self.attempts) and not self.failures

    def failure_line(self) -> str:
        kept = self.attempts[-1].kept if self.attempts else []
        tried = f" even with {len(kept)} sensitive weight(s) kept in float" if kept else ""
        return f"{self.mode} model fails its accuracy gate on {self.data}{tried}: {'; '.join(self.failures)}"

    def record(self) -> QuantizationRecord:
        return QuantizationRecord(
            self.mode, self.passed, self.failures, self.gate.record(), self.data, self.task.value, self.calibration,
            self.settings, self.size_before, self.size_after, self.figures, self.quantized, self.kept, self.ops,
            self.sensitivity, self.attempts, round(self.seconds, 2), self.search_budget,
        )  # fmt: skip


def quantize_directory(
    directory: Path,
    manifest: Manifest,
    options: QuantOptions,
    gate: Gate,
    data: EvalSet,
    calibration: EvalSet | None = None,
    references: Mapping[str, Runner] | None = None,
    threads: int | None = None,
    progress: Progress | None = None,
    budget: float = SEARCH_BUDGET,
) -> QuantizationReport:  # noqa: PLR0915 - the tiers read best in one place
    """Replace the float graphs in ``directory`` with quantized ones; the report says whether they pass
    ``gate`` on ``data`` (figures against the float graphs, and against ``references`` when given)."""
    step = progress or (lambda message: log.info(message))
    clock = time.perf_counter()
    task = task_of(manifest)
    report = QuantizationReport(options.mode.value, gate, data.source, task, search_budget=budget)
    float_dir = Path(tempfile.mkdtemp(prefix=".work-float-", dir=directory))  # inside the staging directory
    try:
        for entry in manifest.graphs:
            for path in directory.glob(f"{entry.file}*"):
                shutil.move(path, float_dir / path.name)
        report.size_before = _size(float_dir, manifest)
        for entry in manifest.graphs:
            _fold_transposes(float_dir, entry.file)
        floats = ExportedModel.from_manifest(float_dir, manifest, "cpu", threads)
        float_runners = {g.name: floats.graph(g.name).run for g in manifest.graphs}
        float_forward = forward(manifest, float_runners)
        sites = {g.name: weight_sites(float_dir / g.file) for g in manifest.graphs}
        user_keep = _keep_per_graph(options.keep_float, sites)
        calibrated = MODES[options.mode].calibrated
        if calibrated and calibration is None:
            calibration, data = data.split()
            report.data = data.source
        if calibrated:
            report.calibration = calibration.source
        # PyTorch's figures once; every attempt below is scored against the float graphs only
        step(f"scoring the float model on {data.source}")
        baseline = {"float": float_forward, **({"pytorch": forward(manifest, references)} if references else {})}
        report.figures = evaluate(task, baseline, data, "float")

        tiered = options.mode is Mode.INT8 and options.outlier_channels is None
        options = replace(options, outlier_channels=options.outlier_channels or 0)
        outlier_data = calibration if calibration is not None else random_eval_set(manifest, seed=OUTLIER_SEED)

        def attempt(keep: tuple[str, ...]) -> tuple[list[QuantResult], Figures]:
            """Quantize every graph keeping ``keep`` (site ids) and the user's list in float; score it."""
            results = []
            for entry in manifest.graphs:
                batches = _calibration_feeds(manifest, calibration, float_runners, entry.name) if calibrated else None
                if options.outlier_channels:
                    batches = _calibration_feeds(manifest, outlier_data, float_runners, entry.name)
                nodes = tuple(site_id.partition(":")[2] for site_id in keep if site_id.startswith(f"{entry.name}:"))
                entry_options = replace(options, keep_float=user_keep[entry.name] + nodes)
                results.append(quantize_file(float_dir / entry.file, directory / entry.file, entry_options, batches))
            quantized = ExportedModel.from_manifest(directory, manifest, "cpu", threads)
            runners = {g.name: quantized.graph(g.name).run for g in manifest.graphs}
            figures = evaluate(task, {"float": float_forward, "quantized": forward(manifest, runners)}, data, "float")
            return results, figures["quantized"]

        step(f"quantizing to {options.mode.value} (if the gate fails, a search for weights to keep in float "
             f"follows, bounded at {budget:.0f} s)")
        results, figures = attempt(())
        base = report.figures["float"]
        report.attempts.append(AttemptRecord([], figures, gate.failures(task, base, figures), options.outlier_channels))
        if report.failures and tiered:
            step(f"{options.mode.value} fails its gate ({report.failures[0]}): computing the {OUTLIER_CHANNELS} "
                 f"largest input channels of each weight in float")  # fmt: skip
            options = replace(options, outlier_channels=OUTLIER_CHANNELS)
            plain = report.attempts[-1].figures
            results, figures = attempt(())
            report.attempts.append(AttemptRecord([], figures, gate.failures(task, base, figures), OUTLIER_CHANNELS))
            if report.failures and gate.badness(task, base, figures) >= gate.badness(task, base, plain):
                options = replace(options, outlier_channels=0)  # it did not help: the search starts from plain int8
        if report.failures:
            results = _search(report, results, attempt, manifest, step, time.perf_counter() + budget, budget)
        report.figures["quantized"] = report.attempts[-1].figures
        _record(report, results, manifest, directory)
        report.seconds = time.perf_counter() - clock
        return report
    finally:
        shutil.rmtree(float_dir, ignore_errors=True)


def _search(report: QuantizationReport, results: list[QuantResult], attempt, manifest: Manifest, step: Progress,
            deadline: float, budget: float) -> list[QuantResult]:  # fmt: skip
    """Keep the most sensitive weights in float until the gate passes, within ``budget`` seconds."""
    gate, task, base = report.gate, report.task, report.figures["float"]
    ids = [f"{entry.name}:{s.node}" for entry, r in zip(manifest.graphs, results, strict=True) for s in r.quantized]
    step(f"{report.mode} fails its gate ({report.failures[0]}): measuring the sensitivity of {len(ids)} weights "
         f"(at most {budget:.0f} s)")  # fmt: skip
    for site_id in ids:
        if time.perf_counter() > deadline:
            report.attempts[-1].failures.append(f"sensitivity search stopped at its {budget:.0f} s budget "
                                                f"after {len(report.sensitivity)} of {len(ids)} weights")  # fmt: skip
            return results
        step(f"sensitivity {len(report.sensitivity) + 1}/{len(ids)}: {site_id}")
        _, figures = attempt(tuple(other for other in ids if other != site_id))
        report.sensitivity[site_id] = round(gate.badness(task, base, figures), 4)
    ranked = sorted(report.sensitivity, key=report.sensitivity.get, reverse=True)
    for count in range(1, max(1, int(len(ids) * MAX_KEPT_FRACTION)) + 1):
        if time.perf_counter() > deadline:
            report.attempts[-1].failures.append(f"search stopped at its {budget:.0f} s budget")
            break
        keep = tuple(ranked[:count])
        step(f"keeping the {count} most sensitive weight(s) in float")
        results, figures = attempt(keep)
        report.attempts.append(AttemptRecord(list(keep), figures, gate.failures(task, base, figures),
                                             report.attempts[-1].outlier_channels))  # fmt: skip
        if not report.failures:
            break
    return results


def _fold_transposes(directory: Path, file: str) -> None:
    """A tied LM head's ``MatMul(x, Transpose(embedding))`` gets its own weight, so it is quantized too."""
    model = load_in_memory(directory / file)
    if fold_weight_transposes(model):
        replace_model(model, directory, file)


def _keep_per_graph(keep: tuple[str, ...], sites: dict[str, list[WeightSite]]) -> dict[str, tuple[str, ...]]:
    """The user's keep-float entries that name weights of each graph; an entry naming none is an error."""
    per_graph = {graph: tuple(match_keep_float(found, keep)[0].values()) for graph, found in sites.items()}
    unmatched = [k for k in keep if not any(k in entries for entries in per_graph.values())]
    if unmatched:
        example = next((s.module for found in sites.values() for s in found), "layers.0")
        raise InputError(
            f"--keep-float {', '.join(repr(u) for u in unmatched)} matches no weight of this model",
            f"name a node, a weight initializer or a module path such as {example!r}",
        )
    return {graph: tuple(dict.fromkeys(entries)) for graph, entries in per_graph.items()}


def _calibration_feeds(
    manifest: Manifest, data: EvalSet, float_runners: Mapping[str, Runner], graph: str, batch_size: int = 4
) -> Iterator[dict]:
    """Calibration batches for one graph, streamed (a decoder's feeds run the float encoder first)."""
    for batch in data.batches(batch_size):
        yield graph_feeds(manifest, batch, float_runners)[graph]


def _record(report: QuantizationReport, results: list[QuantResult], manifest: Manifest, directory: Path) -> None:
    report.size_after = _size(directory, manifest)
    report.settings = results[0].settings if results else {}
    kept_by_search = set(report.attempts[-1].kept)
    report.quantized, report.kept, report.ops = [], [], {}
    for entry, result in zip(manifest.graphs, results, strict=True):
        report.quantized += [_site(s, entry.name) for s in result.quantized]
        for site, reason in result.kept:
            site_id = f"{entry.name}:{site.node}"
            if site_id in kept_by_search:
                reason = f"sensitive: alone it uses {report.sensitivity.get(site_id, 0):.0%} of the gate"
            report.kept.append(_site(site, entry.name, reason))
        for op, n in result.ops.items():
            report.ops[op] = report.ops.get(op, 0) + n


def _site(site: WeightSite, graph: str, reason: str = "") -> WeightRecord:
    return WeightRecord(graph, site.node, site.op_type, site.weight, list(site.shape), site.module, reason)


def _size(directory: Path, manifest: Manifest) -> int:
    return sum(p.stat().st_size for g in manifest.graphs for p in directory.glob(f"{g.file}*"))

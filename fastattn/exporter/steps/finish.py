"""finish: carried files, the lowering plan, the report and the manifest (written once); then the staged
directory becomes the destination, or ``<destination>.rejected`` with a :class:`ValidationFailed`."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from fastattn.errors import ValidationFailed
from fastattn.exporter import report
from fastattn.exporter.lowering.choose import plan_file
from fastattn.exporter.state import ExportResult, ExportState
from fastattn.exporter.steps import Step
from fastattn.exporter.validate import ValidationResult
from fastattn.files import write_atomic
from fastattn.quantize.accuracy import EVAL_FILE, save_npz

PLAN_FILE = "lowering_plan.json"


class Finish(Step):
    name = "finish"

    def run(self, state: ExportState) -> None:
        self.result = finish(state)


def finish(state: ExportState) -> ExportResult:
    manifest = state.manifest
    prepared = state.prepared
    if prepared is not None:
        for name, data in prepared.files.items():  # contents, or a file carried as it is (a checkpoint's)
            if isinstance(data, Path):
                shutil.copy2(data, state.directory / name)
            else:
                write_atomic(state.directory / name, data)
        if prepared.eval_set is not None:
            save_npz(prepared.eval_set, state.directory / EVAL_FILE)
    if state.choices:
        layers = {a.node: a.layer for a in manifest.attention}
        plan = {"format": "fastattn-lowering-plan", "target": manifest.target.value,
                "graphs": plan_file(state.choices, layers)}  # fmt: skip
        write_atomic(state.directory / PLAN_FILE, (json.dumps(plan, indent=2) + "\n").encode())
    state.timings["total"] = time.perf_counter() - state.started
    text = report.render(manifest, state.timings, state.notes)
    write_atomic(state.directory / "report.md", text.encode())
    manifest.files = [name for name in state.staging.files() if name != "fastattn.json"]
    manifest.save(state.directory)
    result = state.validation  # None: nothing was validated anew (repackage)
    if state.gate_failure or (result is not None and not result.passed):
        kept = state.staging.reject()
        fix = f"see {kept / 'report.md'}; {state.untouched}"
        if state.gate_failure:
            fix = f"relax the gate (--max-ppl-increase, --min-cosine, --max-accuracy-drop) or choose another mode; {fix}"
        raise ValidationFailed(state.gate_failure or failure_line(result), fix)  # type: ignore[arg-type]
    return ExportResult(state.staging.commit(), manifest, result, state.timings, text)


def failure_line(result: ValidationResult) -> str:
    failures = result.failures()
    case, out = failures[0]
    more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
    detail = f"max abs error {out.max_abs:.3g}, max rel {out.max_rel:.3g}, cosine {out.cosine:.6f}"
    if out.row_cosine is not None and result.tolerance.min_row_cosine is not None:
        detail += f", least row cosine {out.row_cosine:.6f}"
    if out.token_cosine is not None and result.tolerance.min_token_cosine is not None:
        detail += f", least token cosine {out.token_cosine:.6f}"
    if out.top1 is not None and result.tolerance.min_top1 is not None:
        detail += f", top-1 agreement {out.top1:.4f}"
    if out.note:
        detail += f" ({out.note})"
    return (
        f"validation failed: output {out.name!r} of graph {case.graph!r} at {case.name}: {detail}; "
        f"passing needs {result.tolerance.describe()}{more}"
    )

"""What the steps of one export share: the graphs on their way, the manifest under construction, results.

A step reads and fills an :class:`ExportState`; nothing else passes between steps. The
manifest is built up field by field and written once, by the last step.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import onnx_ir as ir

from fastattn.exporter.lowering.apply import Choice
from fastattn.exporter.options import ExportOptions
from fastattn.exporter.validate import Case, Runner, ValidationResult
from fastattn.families.base import Prepared
from fastattn.families.graphs import GraphDef
from fastattn.outdir import Staging
from fastattn.runtime.manifest import Manifest, Precision

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclass
class ExportState:
    options: ExportOptions
    staging: Staging
    progress: Progress
    precision: Precision  # what validation holds the graphs to
    source: Path  # the model file (export) or the export directory (rework)
    manifest: Manifest | None = None  # made by the first step, filled in by the others, written once at the end  # the model file (export) or the export directory (rework)
    prepared: Prepared | None = None  # the model's graphs and records (export only)
    graphs: list[GraphDef] = field(default_factory=list)  # what validation runs: specs, and modules if any
    expected_fusions: dict[str, dict[str, int]] = field(default_factory=dict)  # graph -> rule -> count
    models: dict[str, ir.Model] = field(default_factory=dict)  # graph name -> ONNX model in memory
    references: dict[str, Runner] = field(default_factory=dict)  # what validation compares against
    reference_label: str = "PyTorch"
    cases: list[Case] = field(default_factory=list)  # validation cases
    choices: dict[str, dict[str, Choice]] = field(default_factory=dict)  # graph -> node -> kernel
    notes: list[str] = field(default_factory=list)  # for the report
    timings: dict[str, float] = field(default_factory=dict)
    validation: ValidationResult | None = None
    gate_failure: str | None = None  # a quantization gate that failed (the export is then rejected)
    untouched: str = ""  # what to tell the user was not written when it fails
    started: float = field(default_factory=time.perf_counter)

    @property
    def directory(self) -> Path:
        return self.staging.path

    def timed(self, name: str):
        """A context manager adding the seconds of a block to ``timings[name]``."""
        return _Timer(self.timings, name)


class _Timer:
    def __init__(self, timings: dict[str, float], name: str):
        self.timings, self.name = timings, name

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc) -> None:
        self.timings[self.name] = self.timings.get(self.name, 0.0) + time.perf_counter() - self.start


@dataclass
class ExportResult:
    output: Path
    manifest: Manifest
    validation: ValidationResult | None  # None: nothing was validated anew (repackage)
    timings: dict[str, float] = field(default_factory=dict)
    report: str = ""

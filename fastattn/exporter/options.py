"""What one export (or rework of an export) is asked for, checked before any long work starts."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fastattn.errors import InputError
from fastattn.exporter.lowering.choose import LoweringOptions, Pin, read_plan
from fastattn.exporter.lowering.measure import ShapeCase
from fastattn.onnx_files import EXTERNAL_DATA_THRESHOLD
from fastattn.runtime.manifest import Precision, TensorSpec
from fastattn.runtime.records import Tolerance
from fastattn.targets import Target

if TYPE_CHECKING:
    from fastattn.families.base import FastDecode
    from fastattn.quantize.step import QuantizeStep

DEFAULT_OPSET = 20
MIN_OPSET, MAX_OPSET = 18, 23  # the function bodies need 18; lowering and fusions raise to 23 where needed


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
    lowering_plan: Path | None = None  # pin each layer's kernel from an earlier export's plan
    repeats: int = 10  # timed runs per lowering candidate and shape
    allow_fusion_shortfall: bool = False
    quantize: QuantizeStep | None = None  # quantize after lowering and fusion, gated on accuracy
    # Decoders: GenAI's decode path (unguarded GQA with rotary inside; past and present can be
    # one buffer). Rows must be unpadded; sequences at most max_positions long.
    kv_buffer: bool = False
    package_ort: bool = False  # also write <graph>.ort + required_operators.config (exporter.ort_format)
    package_optimum: bool = False  # encoder-decoders: also Optimum's layout (exporter.optimum_layout)
    task: str | None = None  # Hugging Face models: Optimum's task name; None = from the architecture
    code: Path | None = None  # the .py file defining a pickled model's classes (needs allow_pickle)

    def __post_init__(self) -> None:
        object.__setattr__(self, "output", Path(self.output))
        object.__setattr__(self, "target", Target(self.target))
        if not MIN_OPSET <= self.opset <= MAX_OPSET:
            raise InputError(f"opset {self.opset} is not supported", f"use {MIN_OPSET} to {MAX_OPSET} (default 20)")
        if self.threads is not None and self.threads < 1:
            raise InputError(f"threads must be at least 1, got {self.threads}", "pass a positive count")
        if self.repeats < 1:
            raise InputError(f"repeats must be at least 1, got {self.repeats}", "pass a positive count")
        if self.kv_buffer and self.target is not Target.CPU:
            raise InputError(f"--kv-buffer is a CPU path (GroupQueryAttention), not for target {self.target.value}",
                             "export with -t cpu, or without --kv-buffer")  # fmt: skip
        if self.code is not None and not self.allow_pickle:
            raise InputError("--code imports and runs a Python file, the trust --allow-pickle asks for",
                             "add --allow-pickle, or drop --code")  # fmt: skip
        if self.only and self.lowering_plan:
            raise InputError("--lowering and --lowering-plan both given", "pass one of them")
        self.lowering(None, "model")  # an unknown or unsupported rule: one line now, not after the capture

    def pins(self) -> dict[str, dict[str, Pin]]:
        """Kernels pinned per graph and layer by ``lowering_plan`` (empty without one)."""
        if self.lowering_plan is None:
            return {}
        try:
            data = json.loads(Path(self.lowering_plan).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputError(f"cannot read the lowering plan {self.lowering_plan}: {e}",
                             "pass the lowering_plan.json an earlier export wrote") from e  # fmt: skip
        return read_plan(data, str(self.lowering_plan))

    def lowering(self, fast_decode: FastDecode | None, graph: str) -> LoweringOptions:
        """How the attention of ``graph`` is lowered."""
        return LoweringOptions(self.target, self.profile, self.only, self.repeats, self.threads, fast_decode,
                               self.pins().get(graph, {}))  # fmt: skip

    def files_read(self, model: Path | None) -> list[Path]:
        """The files a run reads: they must stay outside its destination."""
        files = [model] if model is not None else []
        files += [p for p in (self.lowering_plan, self.code) if p is not None]
        if self.quantize is not None:
            files += [p for p in (self.quantize.eval_data, self.quantize.calibration) if p is not None]
        return files

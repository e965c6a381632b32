"""What a quantization mode is: its onnxruntime tool, the precision it gives, and the gate it must pass.

Each mode module (dynamic, static, int4, fp16) declares one :class:`ModeSpec` as ``MODE``;
:data:`fastattn.quantize.modes.MODES` lists them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fastattn.quantize.gates import Gate
from fastattn.quantize.options import Job, Mode
from fastattn.runtime.manifest import Precision

Tool = Callable[[Job], tuple[dict[str, str], dict]]  # job -> (weights left float -> why, settings)


@dataclass(frozen=True)
class ModeSpec:
    mode: Mode
    precision: Precision
    gate: Gate  # how much task accuracy the mode may cost against the float model (relaxable by the user)
    tool: Tool
    calibrated: bool = False  # needs calibration batches (Job.calibration)
    renames_inputs: bool = False  # may rename the inputs of protected nodes (fp16 inserts Casts before them)

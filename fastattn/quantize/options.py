"""What a quantization is asked for (:class:`QuantOptions`) and what it did (:class:`QuantResult`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import numpy as np

from fastattn.errors import InputError
from fastattn.targets import Target


class Mode(str, Enum):
    """The four ways an export is quantized, each with onnxruntime's own tool."""

    INT8 = "int8"  # quantize_dynamic: MatMulInteger, activations quantized at run time (CPU EP)
    INT8_STATIC = "int8-static"  # quantize_static, QDQ: calibrated activation ranges (OpenVINO's format)
    INT4 = "int4"  # MatMulNBitsQuantizer: weight-only, block-wise
    FP16 = "fp16"  # convert_float_to_float16: for GPU execution providers


class CalibrationMethod(str, Enum):
    """How ``int8-static`` turns calibration activations into ranges (onnxruntime's calibrators)."""

    MINMAX = "minmax"
    ENTROPY = "entropy"
    PERCENTILE = "percentile"


@dataclass(frozen=True)
class QuantOptions:
    mode: Mode
    block_size: int = 32  # int4: weights per scale along K (a power of two, >= 16)
    symmetric: bool = True  # int4 and int8 weights: no zero point
    accuracy_level: int | None = (
        None  # int4: MatMulNBits compute type; None = the provider's best (see int4.py)
    )
    calibration_method: CalibrationMethod = CalibrationMethod.MINMAX
    calibration_batches: int = 16  # int8-static: at most this many batches are run
    keep_float: tuple[str, ...] = ()  # node names, weight initializer names or module-path prefixes
    # int8: input channels per weight MatMul computed in float beside the integer product (outliers.py);
    # None: the quantize step decides (0 first, OUTLIER_CHANNELS when plain int8 fails its gate)
    outlier_channels: int | None = None
    target: Target = Target.CPU  # what the model is lowered for: its provider decides the format

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", Mode(self.mode))
        object.__setattr__(self, "calibration_method", CalibrationMethod(self.calibration_method))
        object.__setattr__(self, "keep_float", tuple(self.keep_float))
        if self.block_size < 16 or self.block_size & (self.block_size - 1):
            raise InputError(
                f"int4 block size {self.block_size} is not a power of two >= 16",
                "use 32 (the default), 64 or 128",
            )
        if self.accuracy_level is not None and self.accuracy_level not in (0, 1, 2, 3, 4):
            raise InputError(
                f"int4 accuracy level {self.accuracy_level} is not one of 0-4",
                "use 4 (int8 compute, fast on CPU), 1 (fp32 compute) or leave it unset",
            )
        if self.outlier_channels is not None and self.outlier_channels < 0:
            raise InputError(f"outlier channels {self.outlier_channels} is negative", "use 0 (none) or a few (4)")
        if self.calibration_batches < 1:
            raise InputError(
                f"calibration_batches is {self.calibration_batches}", "use at least 1 (default 16)"
            )
        object.__setattr__(self, "target", self.target if isinstance(self.target, Target) else Target.parse(self.target))


@dataclass
class WeightSite:
    """A MatMul/Gemm whose weight (input B) is a constant initializer: what quantization may touch."""

    node: str
    op_type: str
    weight: str  # initializer name
    shape: tuple[int, ...]
    module: str  # PyTorch module path (capture metadata), else the node name


@dataclass
class QuantResult:
    mode: Mode
    quantized: list[WeightSite] = field(default_factory=list)
    kept: list[tuple[WeightSite, str]] = field(default_factory=list)  # (site, why it stayed float)
    size_before: int = 0  # bytes of the .onnx and its external data
    size_after: int = 0
    settings: dict = field(default_factory=dict)  # what was chosen, and why
    ops: dict[str, int] = field(default_factory=dict)  # op type -> count in the output's main graph

    def to_dict(self) -> dict:
        def site(s: WeightSite) -> dict:
            return {
                "node": s.node,
                "op": s.op_type,
                "weight": s.weight,
                "shape": list(s.shape),
                "module": s.module,
            }

        return {
            "mode": self.mode.value,
            "quantized": [site(s) for s in self.quantized],
            "kept": [{**site(s), "reason": r} for s, r in self.kept],
            "size_before": self.size_before,
            "size_after": self.size_after,
            "settings": self.settings,
            "ops": self.ops,
        }


@dataclass
class Job:
    """One model to quantize, as the mode modules see it (paths inside a private work directory)."""

    src: Path  # the float model, prepared (types of weight-site tensors filled in)
    dst: Path  # where the mode writes its output (its external data beside it, ``<name>.data``)
    sites: list[WeightSite]  # to quantize
    others: list[str]  # names of every other MatMul/Gemm node, subgraphs included: never quantized
    options: QuantOptions
    workdir: Path
    external: bool  # write weights as external data (``<dst name>.data``)
    calibration: Iterable[dict[str, np.ndarray]] | None = None  # int8-static: feeds, one batch at a time
    keep: tuple[str, ...] = ()  # node names kept in float (fp16 blocks them)

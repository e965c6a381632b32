"""Quantize an exported ONNX graph with onnxruntime's own tools.

    quantize_file(src, dst, QuantOptions(Mode.INT4)) -> QuantResult

Only *weight sites* are quantized: MatMul/Gemm nodes of the main graph whose weight
(input B) is a constant initializer. Attention (fastattn functions, GroupQueryAttention,
MultiHeadAttention, ONNX Attention, the bodies of If branches) and every
activation x activation MatMul stay float. See :mod:`fastattn.quantize.api`.
"""

from fastattn.quantize.options import CalibrationMethod, Mode, QuantOptions, QuantResult, WeightSite

__all__ = [
    "CalibrationMethod",
    "Mode",
    "QuantOptions",
    "QuantResult",
    "WeightSite",
    "npz_batches",
    "quantize_file",
    "sample_batches",
    "weight_sites",
]


def __getattr__(name: str):
    # onnxruntime.quantization is slow to import: load the API on first use.
    if name in ("quantize_file", "weight_sites"):
        from fastattn.quantize import api  # noqa: PLC0415

        return getattr(api, name)
    if name in ("npz_batches", "sample_batches"):
        from fastattn.quantize import calibration  # noqa: PLC0415

        return getattr(calibration, name)
    raise AttributeError(name)

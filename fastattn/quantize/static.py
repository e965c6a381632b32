"""``int8-static``: onnxruntime's ``quantize_static`` in QDQ format, on calibrated activation ranges.

QuantizeLinear/DequantizeLinear pairs go on the inputs of each weight-site MatMul/Gemm:
weights int8, symmetric, per output channel (axis 1 of B); activations uint8, asymmetric,
one range per tensor from the calibrator. That is onnxruntime's advice for x86 CPUs
(``quantize_static``'s docstring: U8 activations, S8 weights; ``reduce_range`` only
without VNNI) and the QDQ form OpenVINO EP consumes. Outputs stay float
(``OpTypesToExcludeOutputQuantization``): the CPU EP fuses DQ -> MatMul into
MatMulIntegerToFloat. Measured on a 6-layer d=512 decoder (2 threads): as fast as with a
Q/DQ on the output (prefill S=128 8.1 vs 8.4 ms, decode 0.78 ms both) and closer to
float (logits cosine 0.99998 vs 0.99996).

Calibration runs first (:func:`~fastattn.quantize.calibration.collect_ranges`, one batch
at a time), its ranges go to a calibration cache file, and ``quantize_static`` reads them
from there instead of running its own single-pass calibration. Only the sites given by
name are quantized: activation x activation MatMuls, If branches and function bodies keep
no Q/DQ (the QDQ quantizer does not enter subgraphs or functions).
"""

from __future__ import annotations

import logging

from onnxruntime.quantization import QuantFormat, QuantType, quantize_static, save_tensors_data

from fastattn.errors import InputError
from fastattn.quantize.base import ModeSpec
from fastattn.quantize.calibration import ORT_METHODS, collect_ranges
from fastattn.quantize.dynamic import reduce_range
from fastattn.quantize.gates import INT8_GATE
from fastattn.quantize.options import Job, Mode
from fastattn.runtime.manifest import Precision

log = logging.getLogger(__name__)


def quantize(job: Job) -> tuple[dict[str, str], dict]:
    """Calibrate, then quantize ``job.sites``; returns (sites kept float -> reason, settings)."""
    calibration = job.calibration
    if calibration is None:
        raise InputError("int8-static needs calibration data", "pass an .npz of sample inputs, or use int8")
    options = job.options
    op_types = sorted({s.op_type for s in job.sites})
    ranges, used = collect_ranges(
        job.src, calibration, options.calibration_method, op_types, job.workdir, options.calibration_batches
    )
    cache = job.workdir / "calibration.json"
    save_tensors_data(ranges, cache)
    narrow, why = reduce_range()
    quantize_static(
        job.src,
        job.dst,
        None,
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=op_types,
        per_channel=True,
        reduce_range=narrow,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        nodes_to_quantize=[s.node for s in job.sites],
        use_external_data_format=job.external,
        calibrate_method=ORT_METHODS[options.calibration_method],
        calibration_cache_path=cache,
        extra_options={
            "MatMulConstBOnly": True,
            "WeightSymmetric": options.symmetric,
            "ActivationSymmetric": False,
            "OpTypesToExcludeOutputQuantization": op_types,
        },
    )
    settings = {
        "tool": "onnxruntime.quantization.quantize_static",
        "format": "QDQ",
        "weight_type": "int8",
        "activation_type": "uint8",
        "activation_type_reason": "onnxruntime's advice for x86 CPUs, and OpenVINO's QDQ input: "
        "U8 activations, S8 weights",
        "per_channel": True,
        "symmetric": options.symmetric,
        "output_quantized": False,
        "output_quantized_reason": "DQ -> MatMul with a float output fuses into MatMulIntegerToFloat: "
        "as fast, and one rounding less",
        "reduce_range": narrow,
        "reduce_range_reason": why,
        "calibration_method": options.calibration_method.value,
        "calibration_batches": used,
    }
    return {}, settings


MODE = ModeSpec(Mode.INT8_STATIC, Precision.INT8, INT8_GATE, quantize, calibrated=True)

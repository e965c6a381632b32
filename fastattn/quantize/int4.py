"""``int4``: onnxruntime's ``MatMulNBitsQuantizer``, weight-only, block-wise (round to nearest).

Each weight-site MatMul becomes ``com.microsoft.MatMulNBits``: 4-bit weights in blocks of
``block_size`` along K, one scale per block (and a zero point unless symmetric). The
quantizer walks If branches too (not function bodies), and quantizes any MatMul with a
constant B it meets unless excluded: every MatMul that is not a chosen site is therefore
passed in ``nodes_to_exclude`` (its ``nodes_to_include`` adds to the MatMul op type, it
does not restrict). Gemm sites stay float (the default algorithm takes MatMul and Gather).

``accuracy_level`` picks MatMulNBits' compute type. Left unset it is chosen per target
(``fastattn.targets``):

- cpu: 4, int8 compute: activations are quantized per block to int8 and multiplied with
  integer (VNNI/AVX512) kernels; levels 0/1 unpack the weights to fp32 first. Measured on
  a 6-layer d=512 decoder (30 MatMulNBits, 2 threads, one run side by side): a decode step
  (past 255) took 0.98 ms at level 0 and 0.59 ms at level 4 (ratio 1.67); a 128-token
  prefill 13.98 vs 13.40 ms (1.04): prompts are GEMM-bound either way, decoding is
  weight-bandwidth-bound and gains. Logits cosine to float was 0.99976 at both levels
  (level 4 moved logits by 0.5 where the 4-bit weights moved them by 6.8).
- cuda: unset (0): the level selects MLAS' CPU kernels; the CUDA kernel computes in the
  activations' float type.
- openvino: QDQ format instead (int4 DequantizeLinear-21 -> MatMul), because OpenVINO EP
  runs no com.microsoft ops; the CPU EP runs that form too.
"""

from __future__ import annotations

import logging

import onnx
from onnxruntime.quantization import QuantFormat

from fastattn.quantize.base import ModeSpec
from fastattn.quantize.gates import Gate
from fastattn.quantize.options import Job, Mode
from fastattn.runtime.manifest import Precision

log = logging.getLogger(__name__)


def _import_quantizer() -> type:
    """``MatMulNBitsQuantizer``, without the ``logging.basicConfig(level=INFO)`` its module runs on
    import (which would print every library's INFO lines for the rest of the process)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer  # noqa: PLC0415

    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
    root.setLevel(level)
    return MatMulNBitsQuantizer


MatMulNBitsQuantizer = _import_quantizer()

def quantize(job: Job) -> tuple[dict[str, str], dict]:
    """Quantize ``job.sites`` to 4 bits; returns (sites kept float -> reason, settings)."""
    options = job.options
    kept = {
        s.node: "Gemm: MatMulNBitsQuantizer takes MatMul only" for s in job.sites if s.op_type != "MatMul"
    }
    qdq = options.target.spec.int4_qdq
    if options.accuracy_level is None:
        level, why = options.target.spec.int4_accuracy_level
    else:
        level, why = options.accuracy_level, "given"
    exclude = list(job.others) + list(kept)
    model = onnx.load(job.src)
    quantizer = MatMulNBitsQuantizer(
        model,
        bits=4,
        block_size=options.block_size,
        is_symmetric=options.symmetric,
        accuracy_level=None if qdq else level or None,
        nodes_to_exclude=exclude,
        quant_format=QuantFormat.QDQ if qdq else QuantFormat.QOperator,
        op_types_to_quantize=("MatMul",),
    )
    quantizer.process()
    quantizer.model.save_model_to_file(str(job.dst), job.external)
    settings = {
        "tool": "onnxruntime.quantization.matmul_nbits_quantizer.MatMulNBitsQuantizer",
        "format": "QDQ (DequantizeLinear int4 -> MatMul)" if qdq else "MatMulNBits",
        "bits": 4,
        "block_size": options.block_size,
        "symmetric": options.symmetric,
        "accuracy_level": None if qdq else level,
        "accuracy_level_reason": why,
    }
    return kept, settings


MODE = ModeSpec(Mode.INT4, Precision.INT4, Gate(max_ppl_increase=0.03, min_cosine=0.99, max_accuracy_drop=0.03),
                quantize)  # fmt: skip

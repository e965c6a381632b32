"""``int8``: onnxruntime's ``quantize_dynamic`` (QOperator: DynamicQuantizeLinear + MatMulInteger).

Weights are int8, symmetric, one scale per output channel (axis 1 of B), for trained
weights whose output channels differ in range. On random weights it gains nothing
measurable (6-layer d=512 decoder: logits cosine 0.99998 either way) and costs a little
speed (2 threads: prefill S=128 7.1 vs 6.8 ms, decode step 0.73 vs 0.62 ms per tensor).
Activations are quantized per tensor at run time to uint8, the only activation type of
the dynamic path.

The quantizer is restricted to MatMul and given the weight sites by name: left to its
defaults it turns any node called ``Attention`` (ONNX ``Attention``-23, fastattn's own
function call) into ``com.microsoft.QAttention``, which then fails to load, and without
``DefaultTensorType`` it stops on contrib ops whose output types ONNX cannot infer. It
leaves If branches alone (``EnableSubgraph`` off) and copies model-local functions unchanged.
Gemm has no integer kernel on this path: Gemm sites stay float.

With ``outlier_channels`` (the quantize step's second tier, :mod:`fastattn.quantize.outliers`), the
largest input channels of each site, found on the job's calibration batches, are computed in
float beside the integer product, so the per-tensor activation scale is set by the others.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import platform
from pathlib import Path

import onnx_ir as ir
from onnxruntime.quantization import QuantType, quantize_dynamic

from fastattn.quantize.base import ModeSpec
from fastattn.quantize.gates import INT8_GATE
from fastattn.quantize.options import Job, Mode
from fastattn.quantize.outliers import channel_absmax, split_outliers
from fastattn.runtime.manifest import Precision
from fastattn.targets import Int8Format

log = logging.getLogger(__name__)


@functools.cache
def cpu_has_vnni() -> bool | None:
    """Whether this x86 CPU has VNNI (avx512_vnni or avx_vnni); None when it is not x86 or unknown."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"):
        return None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return bool(flags & {"avx512_vnni", "avx_vnni"})
    return None


def reduce_range() -> tuple[bool, str]:
    """onnxruntime's advice: 7-bit weights on x86 without VNNI, where u8 x s8 products can saturate."""
    vnni = cpu_has_vnni()
    if vnni is None:
        return False, f"{platform.machine()} CPU: int8 dot products do not saturate, full 8-bit weights"
    if vnni:
        return (
            False,
            "this CPU has VNNI (avx512_vnni/avx_vnni): u8 x s8 products accumulate without saturation",
        )
    return True, "this x86 CPU lacks VNNI: 7-bit weights avoid u8 x s8 saturation (onnxruntime's advice)"


def quantize(job: Job) -> tuple[dict[str, str], dict]:
    """Quantize ``job.sites`` (MatMul only); returns (sites kept float -> reason, settings)."""
    kept = {
        s.node: "Gemm: the dynamic path has no integer Gemm kernel"
        for s in job.sites
        if s.op_type != "MatMul"
    }
    nodes = [s.node for s in job.sites if s.node not in kept]
    narrow, why = reduce_range()
    settings = {
        "tool": "onnxruntime.quantization.quantize_dynamic",
        "format": "QOperator (DynamicQuantizeLinear + MatMulInteger)",
        "weight_type": "int8",
        "activation_type": "uint8 (dynamic, per tensor)",
        "per_channel": True,
        "symmetric": job.options.symmetric,
        "reduce_range": narrow,
        "reduce_range_reason": why,
    }
    if job.options.target.spec.int8 is not Int8Format.DYNAMIC:
        settings["note"] = job.options.target.spec.note
    src = job.src
    if job.options.outlier_channels:
        src, settings["outliers"] = _split(job, nodes)
    quantize_dynamic(
        src,
        job.dst,
        op_types_to_quantize=["MatMul"],
        per_channel=True,
        reduce_range=narrow,
        weight_type=QuantType.QInt8,
        nodes_to_quantize=nodes,
        use_external_data_format=job.external,
        extra_options={
            "MatMulConstBOnly": True,
            "WeightSymmetric": job.options.symmetric,
            "EnableSubgraph": False,
        },
    )
    return kept, settings


def _split(job: Job, nodes: list[str]) -> tuple[Path, dict]:
    """The job's model with each site's outlier channels in float beside it (a file in the work directory)."""
    count = job.options.outlier_channels or 0
    if job.calibration is None:
        raise ValueError("outlier channels need calibration batches (Job.calibration)")
    model = ir.load(job.src)
    names = {n.name for n in model.graph if n.name in set(nodes)}
    inputs = [n.inputs[0].name for n in model.graph if n.name in names and n.inputs[0] is not None]
    absmax = channel_absmax(model, inputs, job.calibration)
    splits = split_outliers(model, names, absmax, count)
    path = job.workdir / "outliers.onnx"
    ir.save(model, path, external_data="outliers.onnx.data", size_threshold_bytes=1024)
    log.info("int8: %d input channels of each of %d weights computed in float", count, len(splits))
    return path, {"channels_per_weight": count, "weights": len(splits),
                  "largest_over_median": max((s.share for s in splits), default=0.0),
                  "how": "the largest input channels (absolute maximum on calibration batches) of each weight "
                         "MatMul are computed in float beside the int8 product"}  # fmt: skip


MODE = ModeSpec(Mode.INT8, Precision.INT8, INT8_GATE, quantize)

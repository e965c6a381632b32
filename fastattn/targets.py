"""The target table: what an export is lowered for, and what each target's execution provider runs.

One row per target, read by lowering (which rules and ops), fusion (which rules), the quantize
step (which format), sessions (which optimizers to turn off) and reports. Adding an EP is one
:class:`Target` member and one :data:`TARGETS` row. Standard library only: the CLI reads it at
start-up and torch-free workers import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, StrEnum

from fastattn.errors import InputError


class Target(StrEnum):
    """What an export is lowered for: an execution provider, or nothing (portable)."""

    PORTABLE = "portable"
    CPU = "cpu"
    OPENVINO = "openvino"
    CUDA = "cuda"
    WASM = "wasm"  # onnxruntime-web's WebAssembly EP: the CPU EP's kernels compiled to wasm

    @property
    def spec(self) -> TargetSpec:
        return TARGETS[self]

    @classmethod
    def parse(cls, name: str) -> Target:
        try:
            return cls(name)
        except ValueError:
            raise InputError(f"unknown target {name!r}", f"use one of {', '.join(t.value for t in cls)}") from None


class Int8Format(str, Enum):
    DYNAMIC = "dynamic"  # DynamicQuantizeLinear + MatMulInteger (QOperator)
    QDQ = "qdq"  # QuantizeLinear / DequantizeLinear around float ops


@dataclass(frozen=True)
class TargetSpec:
    provider: str  # the runtime's short provider name lowering is measured and validated on
    contrib_ops: bool  # ONNX Runtime's com.microsoft ops may appear
    model_functions: bool  # the provider runs model-local functions (else they are inlined)
    fusions: tuple[str, ...] | None  # fusion rules to run; None = every rule on by default
    disabled_optimizers: tuple[str, ...] = ()  # ORT optimizers the runtime turns off for this target
    disabled_why: str = ""
    int8: Int8Format = Int8Format.DYNAMIC  # the int8 format the provider runs fast
    int4_qdq: bool = False  # int4 as DequantizeLinear-21 -> MatMul instead of MatMulNBits
    int4_accuracy_level: tuple[int, str] = (0, "")  # MatMulNBits compute type left unset, and why
    fp16_compute: bool = False  # the provider computes float16 natively (else Casts to float32)
    check_placement: bool = False  # list the nodes the provider leaves to the CPU EP (it does so silently)
    rules_as: Target | None = None  # the target whose lowering rules it runs (wasm: the CPU EP's)
    web: bool = False  # candidates are timed on onnxruntime-web in Node (fastattn.runtime.web)
    decode_switch: bool = True  # prefill and decode may get different kernels (an If on the sequence length)
    note: str = ""  # what a user should know (said in reports)


SKIP_LAYER_NORM_FUSION = (
    "on the CPU EP of ORT 1.32, ORT's own SkipLayerNormFusion makes post-LN encoders slower: a 6-layer "
    "d=384 int8 encoder at S=128 ran 4.58 ms with it and 3.54 ms without (fp32 8.73 vs 7.75 ms); "
    "RMSNorm decoders are unchanged (3.02 vs 3.01 ms)"
)

TARGETS: dict[Target, TargetSpec] = {
    Target.PORTABLE: TargetSpec(provider="cpu", contrib_ops=False, model_functions=True, fusions=()),
    Target.CPU: TargetSpec(
        provider="cpu", contrib_ops=True, model_functions=True, fusions=None,
        disabled_optimizers=("SkipLayerNormFusion",), disabled_why=SKIP_LAYER_NORM_FUSION,
        int4_accuracy_level=(4, "int8 compute (activations quantized per block): MLAS' integer kernels "
                                "are the fastest on CPU"),
    ),  # fmt: skip
    # onnxruntime-openvino 1.24.1: claims a fastattn function node and then fails to read it
    # ("does not support ... fastattn.Attention"), has no ONNX Attention, fails to load an
    # RMSNormalization-23 model ("the graph is not acyclic") and runs RotaryEmbedding-23 on the
    # CPU EP; MatMulInteger runs slower than the float model there. It fails to load a model with a
    # decode switch's If ("OpenVINO does not support the following ONNX operations:
    # com.intel.ai.OpenVINO-EP-subgraph_1, ..."): one kernel per node.
    Target.OPENVINO: TargetSpec(
        provider="openvino", contrib_ops=False, model_functions=False, fusions=("layer_norm", "packed_qkv"),
        int8=Int8Format.QDQ, int4_qdq=True, check_placement=True, decode_switch=False,
        int4_accuracy_level=(0, "QDQ format for OpenVINO EP (no com.microsoft ops): no MatMulNBits, no accuracy level"),
        note="OpenVINO EP runs MatMulInteger slower than the float model; int8-static (QDQ) is its format",
    ),  # fmt: skip
    Target.CUDA: TargetSpec(
        provider="cuda", contrib_ops=True, model_functions=True, fusions=None, fp16_compute=True,
        int4_accuracy_level=(0, "left unset: the level selects CPU kernels; CUDA computes in the activations' "
                                "float type"),
    ),  # fmt: skip
    # onnxruntime-web 1.30 (measured in Node, benchmarks/results/web.md): every lowering rule, the
    # fusions' contrib ops, int8 and int4 run there; validation runs on the CPU EP, whose kernels it
    # compiles. GroupQueryAttention's prefill is 5-7x slower than the others there: measured, not assumed.
    Target.WASM: TargetSpec(
        provider="cpu", contrib_ops=True, model_functions=True, fusions=None,
        disabled_optimizers=("SkipLayerNormFusion",), disabled_why=SKIP_LAYER_NORM_FUSION,
        int4_accuracy_level=(4, "as on the CPU EP, whose kernels the wasm build compiles"),
        rules_as=Target.CPU, web=True,
        note="int4 decodes 10-20x slower than int8 on wasm (MatMulNBits has no fast wasm kernel): int8 is the web format",
    ),  # fmt: skip
}

"""What an export is lowered for (kept free of heavy imports: the CLI reads it at start-up)."""

from __future__ import annotations

from enum import Enum


class Target(str, Enum):
    """What an export is lowered for: an execution provider, or nothing (portable)."""

    PORTABLE = "portable"
    CPU = "cpu"
    OPENVINO = "openvino"
    CUDA = "cuda"
    WASM = "wasm"  # onnxruntime-web's WebAssembly EP: the CPU EP's kernels compiled to wasm (fastattn.edge.web)

    @property
    def provider(self) -> str:
        """The runtime's short provider name measurements and validation use."""
        return "cpu" if self in (Target.PORTABLE, Target.WASM) else self.value

    @property
    def web(self) -> bool:
        """Measured on onnxruntime-web in Node (fastattn.edge.web); validated on the CPU EP, whose kernels
        the wasm build compiles (measured, onnxruntime-web 1.30: every lowering rule, the contrib ops
        of the fusions, int8 and int4 run there; benchmarks/results/web.md)."""
        return self is Target.WASM

    @property
    def rules_of(self) -> str:
        """The target whose lowering rules apply: wasm runs the CPU EP's."""
        return "cpu" if self is Target.WASM else self.value

    @property
    def contrib_ops(self) -> bool:
        """Whether ORT's com.microsoft contrib ops may appear (OpenVINO EP does not run them)."""
        return self in (Target.CPU, Target.CUDA, Target.WASM)

    @property
    def model_functions(self) -> bool:
        """Whether the provider runs model-local functions. OpenVINO EP claims a fastattn node and
        then fails to read it ("does not support ... fastattn.Attention", onnxruntime-openvino
        1.24.1): remaining portable nodes are inlined into standard ops for it."""
        return self is not Target.OPENVINO

    @property
    def fusions(self) -> tuple[str, ...] | None:
        """The fusion rules to run; None = every rule on by default. For OpenVINO EP only those
        it runs: on onnxruntime-openvino 1.24.1 an ONNX RMSNormalization-23 model fails to load
        ("the graph is not acyclic") and RotaryEmbedding-23 falls back to the CPU EP."""
        return ("layer_norm", "packed_qkv") if self is Target.OPENVINO else None

    @property
    def disabled_optimizers(self) -> tuple[str, ...]:
        """ONNX Runtime optimizers the runtime turns off for this target (see SKIP_LAYER_NORM_FUSION)."""
        return ("SkipLayerNormFusion",) if self is Target.CPU else ()


SKIP_LAYER_NORM_FUSION = (
    "on the CPU EP of ORT 1.32, ORT's own SkipLayerNormFusion makes post-LN encoders slower: a 6-layer "
    "d=384 int8 encoder at S=128 ran 4.58 ms with it and 3.54 ms without (fp32 8.73 vs 7.75 ms); "
    "RMSNorm decoders are unchanged (3.02 vs 3.01 ms)"
)

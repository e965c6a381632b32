"""The typed parts of ``fastattn.json`` beyond graphs: how sessions are built, the decode path, where nodes
ran, what quantization did and how validation went. Each is a dataclass the schema checks on load
(:mod:`fastattn.runtime.schema`); the exporter fills them, the runtime, reports and apps read them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnxruntime as ort

from fastattn.runtime.schema import SchemaError


@dataclass
class SessionSettings:
    """How sessions of an export should be built (the runtime applies it; other apps should too)."""

    disabled_optimizers: list[str] = field(default_factory=list)  # ORT optimizers to turn off
    why: str = ""
    memory_pattern_off: list[str] = field(default_factory=list)  # graphs to run without memory patterns
    memory_pattern_why: str = ""


@dataclass
class KvBuffer:
    """The ``--kv-buffer`` decode path: rows must be unpadded and sequences at most ``max_length`` long;
    past and present may be one buffer (see :mod:`fastattn.runtime.generate`)."""

    max_length: int
    rows: str = "unpadded"
    why: str = ""

    def _check(self, path: str) -> None:
        if self.max_length < 1:
            raise SchemaError(f"{path}.max_length", f"{self.max_length} is not a positive length")


@dataclass
class Placement:
    """Where the nodes of one graph ran on a provider, from an ONNX Runtime profile."""

    graph: str
    requested: str  # the provider asked for first
    providers: list[str]  # what the session uses
    kernels: dict[str, int] = field(default_factory=dict)  # provider -> kernels run there
    fallback: list[str] = field(default_factory=list)  # "op_type node_name" run elsewhere than requested
    onnxruntime: str = ort.__version__

    @property
    def fell_back(self) -> bool:
        return bool(self.fallback)


@dataclass
class PlacementRecord:
    checked_with: str  # which onnxruntime, in which environment (or why it was not checked)
    graphs: dict[str, Placement] = field(default_factory=dict)


@dataclass
class Figures:
    """One model's figures on an evaluation set (None: does not apply, or no labels)."""

    perplexity: float | None = None
    accuracy: float | None = None
    agreement: float | None = None  # top-1 agreement with the reference model
    cosine: float | None = None  # cosine of the main output with the reference model
    cosine_min: float | None = None  # sentence embeddings: the least per-sample cosine


@dataclass
class GateRecord:
    max_ppl_increase: float  # relative: 0.01 = perplexity may grow by 1%
    min_cosine: float  # of the main output with the float model
    max_accuracy_drop: float  # absolute: 0.01 = one point of accuracy


@dataclass
class WeightRecord:
    """A weight MatMul/Gemm quantization touched or kept in float (with why)."""

    graph: str
    node: str
    op: str
    weight: str
    shape: list[int]
    module: str
    reason: str = ""


@dataclass
class AttemptRecord:
    kept: list[str]  # weights (graph:node) kept in float on top of the user's keep list
    figures: Figures
    failures: list[str]
    outlier_channels: int = 0  # int8: input channels per weight computed in float (quantize/outliers.py)


@dataclass
class QuantizationRecord:
    mode: str
    passed: bool
    failures: list[str]
    gate: GateRecord
    data: str  # where the evaluation set came from
    task: str
    calibration: str | None = None
    settings: dict = field(default_factory=dict)  # what the tool was asked, and why (free-form)
    size_before: int = 0
    size_after: int = 0
    figures: dict[str, Figures] = field(default_factory=dict)  # pytorch / float / quantized
    quantized: list[WeightRecord] = field(default_factory=list)
    kept: list[WeightRecord] = field(default_factory=list)
    ops: dict[str, int] = field(default_factory=dict)
    sensitivity: dict[str, float] = field(default_factory=dict)  # graph:node -> share of the gate alone
    attempts: list[AttemptRecord] = field(default_factory=list)
    seconds: float = 0.0
    search_budget: float | None = None  # seconds the sensitivity search was allowed (it stops there)


@dataclass(frozen=True)
class Tolerance:
    """How far an output may be from its reference. Every output must be finite where the reference is.

    Float exports, element-wise: ``max_abs <= atol + rtol * max|reference|`` and ``cosine >= min_cosine``.
    Quantized exports leave ``atol``/``rtol`` out (None): their task gate judges accuracy, and these bounds
    only catch a broken graph: ``cosine``, each batch row's cosine >= ``min_row_cosine``, each token's (each
    vector along the last axis) >= ``min_token_cosine`` and, for logits, top-1 agreement >= ``min_top1``.
    ``basis`` says what measurement the bounds come from.
    """

    atol: float | None
    rtol: float | None
    min_cosine: float
    min_row_cosine: float | None = None
    min_token_cosine: float | None = None
    min_top1: float | None = None
    basis: str = ""

    @property
    def elementwise(self) -> bool:
        return self.atol is not None and self.rtol is not None

    def describe(self) -> str:
        """The rule in words, for reports and error lines."""
        parts = [f"max abs error <= {self.atol:g} + {self.rtol:g} x max|reference|"] if self.elementwise else []
        parts.append(f"cosine >= {self.min_cosine:g}")
        if self.min_row_cosine is not None:
            parts.append(f"each batch row's cosine >= {self.min_row_cosine:g}")
        if self.min_token_cosine is not None:
            parts.append(f"each token's cosine >= {self.min_token_cosine:g}")
        if self.min_top1 is not None:
            parts.append(f"logits top-1 agreement >= {self.min_top1:g}")
        return ", ".join(parts) + ", finite where the reference is"


@dataclass
class OutputStats:
    """One output against its reference, over the positions that mean something (padding left out).

    ``row_cosine``: the least cosine of one batch row; ``token_cosine``: the least cosine of one vector
    along the last axis (one token's hidden state or logits); ``top1``: for logits, the share of
    positions whose argmax agrees. None where they do not apply (or the stats predate them)."""

    name: str
    max_abs: float
    max_rel: float
    mean_abs: float
    cosine: float
    passed: bool
    note: str = ""
    row_cosine: float | None = None
    token_cosine: float | None = None
    top1: float | None = None


@dataclass
class CaseRecord:
    graph: str
    case: str
    sizes: dict[str, int]
    padded: bool
    decode_steps: int
    passed: bool
    outputs: list[OutputStats]


@dataclass
class ValidationRecord:
    passed: bool
    precision: str
    tolerance: Tolerance
    cases: list[CaseRecord] = field(default_factory=list)
    against: str = "PyTorch"  # the reference: PyTorch, transformers, or an earlier export


@dataclass
class OrtGraph:
    """One graph of the export in ORT format."""

    name: str
    onnx_file: str
    file: str
    onnx_bytes: int
    bytes: int
    nodes: int  # nodes of the .onnx as exported
    ort_nodes: int  # nodes of the optimized graph the .ort holds


@dataclass
class OrtPackage:
    """The manifest's ``ort_format``: what a mobile or embedded app ships (see fastattn.exporter.ort_format)."""

    graphs: list[OrtGraph]
    optimization_level: str
    disabled_optimizers: list[str]
    operators: int  # distinct (domain, opset, op) kernels a minimal build must register
    typed_operators: int  # of those, how many the typed config restricts to specific types
    config: str = "required_operators.config"
    typed_config: str = "required_operators_and_types.config"
    operator_list: list[str] = field(default_factory=list)  # "domain;opset;Op", one op each
    validation: ValidationRecord | None = None  # the .ort against the .onnx
    onnxruntime: str = ort.__version__
    package_bytes: int = 0  # what an app ships for the model: the .ort files

    def __post_init__(self) -> None:
        self.package_bytes = sum(g.bytes for g in self.graphs)

    def files(self) -> list[str]:
        return [g.file for g in self.graphs] + [self.config, self.typed_config]


@dataclass
class OptimumPackage:
    """The manifest's ``optimum``: Optimum's layout of an encoder-decoder beside fastattn's graphs, so
    ``ORTModelForSeq2SeqLM.from_pretrained(OUT)`` opens the export (see fastattn.exporter.optimum_layout)."""

    files: list[str]  # encoder_model.onnx, decoder_model_merged.onnx (+ .data beyond 1 GiB)
    validation: ValidationRecord | None = None  # against the export's own graphs
    loader: str = "optimum.onnxruntime.ORTModelForSeq2SeqLM"


@dataclass
class HfRecord:
    """A Hugging Face checkpoint's identity and generation defaults (its config.json and tokenizer files
    are carried beside the graphs)."""

    model_type: str
    family: str  # the architecture spec it was mapped with ("llama", ...), or "attention-interface"
    task: str  # Optimum's task name: feature-extraction, text-generation, text2text-generation
    architecture: str | None = None
    eos_token_ids: list[int] = field(default_factory=list)  # a row stops at any of them
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    decoder_start_token_id: int | None = None
    files: list[str] = field(default_factory=list)  # carried from the checkpoint

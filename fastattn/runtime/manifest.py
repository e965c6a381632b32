"""``fastattn.json``: what an output directory holds, readable without torch.

The manifest is the contract between the exporter (which writes it) and everything that
runs an export (the runtime, bench, apps in other languages). It names each ONNX graph
file with its inputs and outputs (dtype, shape with named dynamic dims, how to fill them
with sample data), the cache pairs of decoders, the attention layers, the opsets, the
validation figures and the versions that produced it.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from pathlib import Path

from fastattn.attention.spec import AttentionKind
from fastattn.errors import InputError
from fastattn.files import write_atomic
from fastattn.runtime import dims, schema
from fastattn.runtime.records import (
    HfRecord,
    KvBuffer,
    OptimumPackage,
    OrtPackage,
    PlacementRecord,
    QuantizationRecord,
    SessionSettings,
    ValidationRecord,
)
from fastattn.runtime.schema import SchemaError
from fastattn.targets import Target

MANIFEST_NAME = "fastattn.json"
FORMAT_VERSION = 1
DTYPES = ("float32", "float16", "bfloat16", "int64", "int32", "int8", "uint8", "bool")
_FILE_NAME = re.compile(r"[\w][\w.+-]*")  # a plain file name in the export directory: no path, no ..
_DIM_NAME = re.compile(r"[A-Za-z_]\w*")


class Arch(StrEnum):
    """What an export holds: which graphs, and how an app drives them."""

    ENCODER = "encoder"  # graph "model": input_ids, attention_mask -> hidden states [, logits]
    DECODER = "decoder"  # graph "model" with a KV cache
    ENCODER_DECODER = "encoder_decoder"  # graphs "encoder" (once), "decoder" (per step, cached)
    MODULE = "module"  # one graph of a foreign module, inputs as the user declared them

    @property
    def generates(self) -> bool:
        return self in (Arch.DECODER, Arch.ENCODER_DECODER)

Dim = int | str  # a fixed size, or the name of a dynamic dimension


class Fill(str, Enum):
    """How sample data for a tensor is made (validation, bench, ``fastattn run --random``)."""

    NORMAL = "normal"  # standard normal floats
    TOKENS = "tokens"  # integers in [0, high)
    MASK = "mask"  # ones (1 = attend), some rows padded in validation
    ZEROS = "zeros"


class Precision(StrEnum):
    """The number format of an export's weights (and of its compute, where the provider has it)."""

    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"
    INT4 = "int4"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name: float32, float16, int64, int32, bool
    shape: tuple[Dim, ...]
    fill: Fill = Fill.NORMAL
    high: int = 0  # exclusive upper bound for Fill.TOKENS

    def _check(self, path: str) -> None:
        if self.dtype not in DTYPES:
            raise SchemaError(f"{path}.dtype", f"{self.dtype!r} is not one of {', '.join(DTYPES)}")
        for axis, d in enumerate(self.shape):
            if isinstance(d, int) and d < 0:
                raise SchemaError(f"{path}.shape[{axis}]", f"{d} is negative")
            if isinstance(d, str):
                try:
                    expr = dims.parse(d)
                except ValueError:
                    expr = None
                if expr is None or not all(_DIM_NAME.fullmatch(p) for p in expr.parts):
                    raise SchemaError(f"{path}.shape[{axis}]", f"{d!r} is not a dim name or expression")
        if self.high < 0:
            raise SchemaError(f"{path}.high", f"{self.high} is negative")

    def to_dict(self) -> dict:
        d = schema.dump(self)
        if not self.high:
            del d["high"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TensorSpec:
        return schema.load(cls, d)

    def dims(self) -> list[str]:
        return [d for d in self.shape if isinstance(d, str)]

    def concrete_shape(self, sizes: dict[str, int]) -> tuple[int, ...]:
        """The shape at the given sizes of the named dims (``a+b`` adds them, ``min(a,K)`` caps; see dims)."""
        return tuple(dims.size(d, sizes) for d in self.shape)


@dataclass(frozen=True)
class CachePair:
    """A decoder's cache: feed ``present`` back as ``past`` at the next step; grows along ``axis``."""

    past: str
    present: str
    axis: int = 2


def _plain_file(name: str, path: str) -> None:
    if not _FILE_NAME.fullmatch(name) or name in (".", ".."):
        raise SchemaError(path, f"{name!r} is not a file name inside the export directory")


@dataclass
class GraphEntry:
    name: str  # "model", or "encoder"/"decoder" for encoder-decoders
    file: str  # a plain file name in the export directory
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    cache: list[CachePair] = field(default_factory=list)

    def _check(self, path: str) -> None:
        _plain_file(self.file, f"{path}.file")
        names = {s.name for s in self.inputs} | {s.name for s in self.outputs}
        for i, pair in enumerate(self.cache):
            for side in (pair.past, pair.present):
                if side not in names:
                    raise SchemaError(f"{path}.cache[{i}]", f"{side!r} is not an input or output of the graph")

    def to_dict(self) -> dict:
        return schema.dump(self) | {"inputs": [t.to_dict() for t in self.inputs],
                                    "outputs": [t.to_dict() for t in self.outputs]}  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict) -> GraphEntry:
        return schema.load(cls, d)


def bounded_cache(entry: GraphEntry) -> bool:
    """A cached graph whose every cache input is capped (``min(past_sequence,K)``): windowed layers only."""
    specs = {s.name: s for s in entry.inputs}
    return bool(entry.cache) and all(
        any(isinstance(d, str) and dims.parse(d).cap for d in specs[p.past].shape) for p in entry.cache
    )


@dataclass
class AttentionLayer:
    """One ``fastattn::Attention`` node as exported, and the kernel it was lowered to."""

    graph: str
    layer: str  # the PyTorch module it came from
    node: str  # the ONNX node name at capture
    kind: AttentionKind
    num_heads: int
    kv_num_heads: int
    causal: bool
    window: int
    global_tokens: int
    inputs: str  # overload: "", "mask", "past", "past_mask"
    lowering: str = "portable"
    timings: dict[str, dict[str, float]] = field(default_factory=dict)  # shape case -> rule -> ms
    spreads: dict[str, dict[str, float]] = field(default_factory=dict)  # shape case -> rule -> ms it moves
    rejected: dict[str, str] = field(default_factory=dict)  # rule -> why it was not used
    block: int = 0  # hierarchical: positions per block


@dataclass
class Manifest:
    arch: Arch
    source: str  # where the model came from (file name and format)
    graphs: list[GraphEntry]
    family: str = ""  # the model family that prepared it (fastattn.families)
    attention: list[AttentionLayer] = field(default_factory=list)
    dims: dict[str, str] = field(default_factory=dict)  # dynamic dim -> meaning
    opsets: dict[str, dict[str, int]] = field(default_factory=dict)  # graph -> domain -> version
    target: Target = Target.PORTABLE  # what attention was lowered for
    fusions: dict[str, dict[str, int]] = field(default_factory=dict)  # graph -> fusion -> count
    placement: PlacementRecord | None = None  # where nodes ran on the target provider
    precision: Precision = Precision.FP32
    quantization: QuantizationRecord | None = None  # what was quantized, the accuracy figures and the gate
    session: SessionSettings = field(default_factory=SessionSettings)  # how sessions should be built
    config: dict | None = None  # the model's own config (fastattn's ModelConfig, ...), for its family
    max_length: int | None = None  # the longest sequence (cache included) the export takes; None: no limit
    kv_buffer: KvBuffer | None = None  # the --kv-buffer decode path
    ort_format: OrtPackage | None = None  # the ORT-format package beside the .onnx files
    hf: HfRecord | None = None  # a Hugging Face checkpoint's identity and generation defaults
    optimum: OptimumPackage | None = None  # Optimum's layout of an encoder-decoder (--package optimum)
    validation: ValidationRecord | None = None
    versions: dict[str, str] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)  # every file of the export (what --force may replace)
    format_version: int = FORMAT_VERSION

    def _check(self, path: str) -> None:
        if not self.graphs:
            raise SchemaError("graphs", "an export has at least one graph")
        names = [g.name for g in self.graphs]
        if len(set(names)) != len(names):
            raise SchemaError("graphs", f"graph names repeat: {names}")
        for i, name in enumerate(self.files):
            _plain_file(name, f"files[{i}]")
        if self.max_length is not None and self.max_length < 1:
            raise SchemaError("max_length", f"{self.max_length} is not a positive length")

    def graph(self, name: str | None = None) -> GraphEntry:
        """The graph called ``name``; with no name, the only graph."""
        if name is None:
            if len(self.graphs) != 1:
                raise InputError(
                    f"this export has graphs {[g.name for g in self.graphs]}",
                    "name the graph to use",
                )
            return self.graphs[0]
        for g in self.graphs:
            if g.name == name:
                return g
        raise InputError(f"no graph named {name!r}; this export has {[g.name for g in self.graphs]}")

    def to_dict(self) -> dict:
        d = schema.dump(self)
        d["graphs"] = [g.to_dict() for g in self.graphs]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Manifest:
        """A manifest from parsed JSON, checked against its schema (:class:`SchemaError` says where)."""
        if not isinstance(d, dict):
            raise SchemaError("", f"{type(d).__name__} is not an object")
        return schema.load(cls, _migrate(d))

    def dumps(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``fastattn.json`` atomically (temporary file, then rename)."""
        return write_atomic(Path(directory) / MANIFEST_NAME, self.dumps().encode())

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Manifest:
        directory = Path(directory)
        path = directory / MANIFEST_NAME
        if not directory.is_dir():
            raise InputError(f"{directory} is not a directory", "pass the output directory of `fastattn export`")
        if not path.is_file():
            raise InputError(f"{directory} has no {MANIFEST_NAME}", "pass the output directory of `fastattn export`")
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputError(f"{path} is not valid JSON ({e})", "re-export the model") from e
        if not isinstance(data, dict):
            raise InputError(f"{path} is not a valid fastattn manifest: {type(data).__name__} is not an object",
                             "re-export the model")  # fmt: skip
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise InputError(
                f"{path} has format_version {version!r}, this fastattn reads {FORMAT_VERSION}",
                "re-export the model with this version of fastattn",
            )
        try:
            return cls.from_dict(data)
        except SchemaError as e:
            raise InputError(f"{path} is not a valid fastattn manifest: {e}", "re-export the model") from e

    def path_of(self, directory: str | os.PathLike, file: str) -> Path:
        """``directory/file`` for a file the manifest names, confined to the export directory: a name
        that leads elsewhere (a symbolic link out, a path) is refused."""
        root = Path(directory).resolve()
        path = root / file
        if not _FILE_NAME.fullmatch(file) or path.resolve().parent != root:
            raise InputError(f"{file!r} in {MANIFEST_NAME} leads outside the export directory {root}",
                             "re-export the model; fastattn reads only files inside an export")  # fmt: skip
        return path


def _migrate(d: dict) -> dict:
    """Exports written before a field was typed: opsets for the whole export, limits in the config."""
    d = dict(d)
    opsets = d.get("opsets")
    if isinstance(opsets, dict) and opsets and all(isinstance(v, int) for v in opsets.values()):
        graphs = d.get("graphs")
        d["opsets"] = {g.get("name"): opsets for g in graphs if isinstance(g, dict)} if isinstance(graphs, list) else {}
    config = d.get("config")
    if "max_length" not in d and isinstance(config, dict) and config.get("positions") == "learned":
        d["max_length"] = config.get("max_positions")
    if "family" not in d:
        d["family"] = "fastattn" if isinstance(config, dict) else "module"
    return d

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
import tempfile
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path

from fastattn.errors import InputError
from fastattn.runtime import dims

MANIFEST_NAME = "fastattn.json"
FORMAT_VERSION = 1

Dim = int | str  # a fixed size, or the name of a dynamic dimension


class Fill(str, Enum):
    """How sample data for a tensor is made (validation, bench, ``fastattn run --random``)."""

    NORMAL = "normal"  # standard normal floats
    TOKENS = "tokens"  # integers in [0, high)
    MASK = "mask"  # ones (1 = attend), some rows padded in validation
    ZEROS = "zeros"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name: float32, float16, int64, int32, bool
    shape: tuple[Dim, ...]
    fill: Fill = Fill.NORMAL
    high: int = 0  # exclusive upper bound for Fill.TOKENS

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shape"], d["fill"] = list(self.shape), self.fill.value
        if not self.high:
            del d["high"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TensorSpec:
        return cls(d["name"], d["dtype"], tuple(d["shape"]), Fill(d.get("fill", "normal")), d.get("high", 0))

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


@dataclass
class GraphEntry:
    name: str  # "model", or "encoder"/"decoder" for encoder-decoders
    file: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    cache: list[CachePair] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "file": self.file,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "cache": [asdict(c) for c in self.cache],
        }

    @classmethod
    def from_dict(cls, d: dict) -> GraphEntry:
        return cls(
            d["name"],
            d["file"],
            [TensorSpec.from_dict(t) for t in d["inputs"]],
            [TensorSpec.from_dict(t) for t in d["outputs"]],
            [CachePair(**c) for c in d.get("cache", [])],
        )


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
    kind: str  # full | causal | sliding | global_local
    num_heads: int
    kv_num_heads: int
    causal: bool
    window: int
    global_tokens: int
    inputs: str  # overload: "", "mask", "past", "past_mask"
    lowering: str = "portable"
    timings: dict[str, dict[str, float]] = field(default_factory=dict)  # shape case -> rule -> ms
    rejected: dict[str, str] = field(default_factory=dict)  # rule -> why it was not used


@dataclass
class Manifest:
    arch: str  # encoder | decoder | encoder_decoder | module
    source: str  # where the model came from (file name and format)
    graphs: list[GraphEntry]
    attention: list[AttentionLayer] = field(default_factory=list)
    dims: dict[str, str] = field(default_factory=dict)  # dynamic dim -> meaning
    opsets: dict[str, int] = field(default_factory=dict)
    target: str = "portable"  # what attention was lowered for: portable | cpu | openvino | cuda
    fusions: dict[str, dict[str, int]] = field(default_factory=dict)  # graph -> fusion -> count
    placement: dict | None = None  # where nodes ran on the target provider (see runtime.placement)
    precision: str = "fp32"
    quantization: dict | None = None  # what was quantized, the accuracy figures and the gate
    # How sessions should be built for this export (the runtime applies it), e.g.
    # {"disabled_optimizers": ["SkipLayerNormFusion"], "why": "...",
    #  "memory_pattern_off": ["model"], "memory_pattern_why": "..."}
    session: dict = field(default_factory=dict)
    config: dict | None = None  # the fastattn model config, when the model is fastattn's own
    # The --kv-buffer decode path: {"max_length": N, "rows": "unpadded", "why": ...}; rows must be
    # unpadded and sequences at most N long; past and present may be one buffer (see runtime.generate)
    kv_buffer: dict | None = None
    # A Hugging Face checkpoint's identity and generation defaults: {"model_type", "family",
    # "architecture", "task", "eos_token_ids", "pad_token_id", "bos_token_id",
    # "decoder_start_token_id", "files": [...]} (its config.json and tokenizer files are beside)
    hf: dict | None = None
    validation: dict | None = None
    versions: dict[str, str] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

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
        d = asdict(self)
        d["graphs"] = [g.to_dict() for g in self.graphs]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Manifest:
        d = dict(d)
        d["graphs"] = [GraphEntry.from_dict(g) for g in d["graphs"]]
        d["attention"] = [AttentionLayer(**a) for a in d.get("attention", [])]
        return cls(**d)

    def dumps(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``fastattn.json`` atomically (temporary file, then rename)."""
        path = Path(directory) / MANIFEST_NAME
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".fastattn.", suffix=".json")
        with os.fdopen(fd, "w") as f:
            f.write(self.dumps())
        os.replace(tmp, path)
        return path

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
            if data.get("format_version") != FORMAT_VERSION:
                raise InputError(
                    f"{path} has format_version {data.get('format_version')}, this fastattn reads {FORMAT_VERSION}",
                    "re-export the model with this version of fastattn",
                )
            return cls.from_dict(data)
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise InputError(f"{path} is not a valid fastattn manifest ({e})", "re-export the model") from e

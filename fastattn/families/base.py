"""What a model family is: it claims model files, and prepares what an export of them needs."""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from fastattn.families.graphs import GraphDef
from fastattn.families.load import LoadedModel, load_model
from fastattn.models.config import RopeScaling
from fastattn.quantize.accuracy import EvalSet
from fastattn.runtime.manifest import Arch, Manifest, TensorSpec
from fastattn.runtime.records import HfRecord


@dataclass(frozen=True)
class PrepareRequest:
    """What the user asked of the model's preparation."""

    inputs: tuple[TensorSpec, ...] = ()  # --input: foreign models declare their inputs
    allow_pickle: bool = False  # unpickling runs code from the file
    kv_buffer: bool = False  # --kv-buffer: whole caches (one fixed buffer), GQA with rotary inside
    task: str | None = None  # Hugging Face models: Optimum's task name; None = from the architecture
    code: Path | None = None  # --code: the .py file defining a pickled model's classes (needs allow_pickle)


@dataclass(frozen=True)
class FastDecode:
    """The ``--kv-buffer`` decode path: unguarded GQA everywhere, rotary folded into it."""

    rope_theta: float
    head_size: int
    max_positions: int  # rows of GQA's cos/sin tables: the longest sequence the export takes
    rope_scaling: RopeScaling | None = None  # the model's (llama3, linear): the tables must follow it


@dataclass
class Prepared:
    """A model ready to capture: its graphs and what the export records about them."""

    family: str
    graphs: list[GraphDef]
    arch: Arch
    source: str  # the file and its format, for the manifest and report
    config: dict | None = None  # the family's own model config, recorded in the manifest
    dims: dict[str, str] = field(default_factory=dict)  # dynamic dim -> meaning
    notes: list[str] = field(default_factory=list)  # for the report
    longest_window: int = 0  # validation takes sequences beyond it
    max_length: int | None = None  # the longest sequence (cache included) the model takes
    expected_fusions: dict[str, dict[str, int]] = field(default_factory=dict)  # graph -> fusion -> count
    eval_set: EvalSet | None = None  # held-out data for accuracy gates (real text where the family has it)
    files: dict[str, bytes | Path] = field(default_factory=dict)  # carried into the export: contents, or a file
    hf: HfRecord | None = None  # Hugging Face models: identity and generation defaults
    fast_decode: FastDecode | None = None  # set when --kv-buffer was asked for and the family supports it


class ModelSource:
    """A model path; its file is loaded (by content, see :mod:`fastattn.families.load`) at most once."""

    def __init__(self, path: Path, allow_pickle: bool = False, code: Path | None = None):
        self.path = path
        self.allow_pickle = allow_pickle
        self.code = code

    @functools.cached_property
    def loaded(self) -> LoadedModel:
        return load_model(self.path, allow_pickle=self.allow_pickle, code=self.code)


class Family(ABC):
    """One family of models: which files it claims, and how it prepares them for export."""

    name: ClassVar[str]
    description: ClassVar[str]  # for "supported families" lines

    @abstractmethod
    def claims(self, source: ModelSource) -> bool:
        """Whether ``source`` is a model of this family (may load it: ``source.loaded``)."""

    @abstractmethod
    def prepare(self, source: ModelSource, request: PrepareRequest) -> Prepared:
        """The graphs and records of an export of ``source``; bad requests raise :class:`InputError`."""

    def expected_fusions(self, manifest: Manifest) -> dict[str, dict[str, int]]:
        """Fusion counts per graph of an existing export of this family (for its rework); {}: unknown."""
        return {}

"""What a bench run records: one :class:`Row` per configuration, and the run around them.

Every row keeps its raw sample times; summaries are recomputed from them on load, so a JSON
file cannot hold percentiles that disagree with its samples. ``BenchResult.to_dict`` /
``from_dict`` round-trip exactly. Torch-free.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fastattn.bench.stats import Summary, summarize
from fastattn.files import write_atomic

SCHEMA = "fastattn-bench/1"


@dataclass
class Phase:
    """One timed block: ``encode`` or ``run`` (a graph without a cache), ``prefill``, ``decode``."""

    name: str
    graph: str
    sizes: dict[str, int]  # dim sizes of the (first) call
    samples_ms: list[float]
    warmup_runs: int = 0  # untimed runs before the samples

    @property
    def summary(self) -> Summary:
        return summarize(self.samples_ms)

    def to_dict(self) -> dict:
        return {**asdict(self), "summary": self.summary.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> Phase:
        return cls(d["name"], d["graph"], dict(d["sizes"]), list(d["samples_ms"]), d.get("warmup_runs", 0))


@dataclass
class Row:
    """One configuration measured: an export on a provider (or PyTorch eager) at (batch, sequence)."""

    model: str  # the model's name (config name, or the file it came from)
    export: str  # the export's label (its directory name; the checkpoint's for PyTorch rows)
    directory: str
    target: str  # what attention was lowered for (portable, cpu, openvino, cuda; eager for PyTorch)
    attention: str  # the attention kinds of the model, e.g. "sliding:64+causal"
    precision: str
    provider: str  # short provider name, or "pytorch"
    engine: str  # "onnxruntime 1.32.0", "torch 2.13.0"
    batch: int
    sequence: int
    phases: list[Phase]
    peak_memory_mb: float | None  # see measure.py: rise of the RSS high-water mark over the pre-session RSS
    session_providers: list[str] = field(default_factory=list)  # what ORT used, in order
    threads: int = 0
    iobinding: bool = False
    others_cpu: float | None = None  # share of the machine's CPU other processes used during the blocks


    def phase(self, name: str) -> Phase | None:
        return next((p for p in self.phases if p.name == name), None)

    @property
    def latency(self) -> Summary:
        """The first phase: the encoder pass, or a decoder's prefill."""
        return self.phases[0].summary

    @property
    def sequences_per_s(self) -> float:
        return self.batch * 1e3 / self.latency.p50

    @property
    def tokens_per_s(self) -> float:
        return self.batch * self.sequence * 1e3 / self.latency.p50

    @property
    def prefill_ms(self) -> float | None:
        prefill = self.phase("prefill")
        return prefill.summary.p50 if prefill else None

    @property
    def decode_tokens_per_s(self) -> float | None:
        """New tokens per second over the batch, from the median single-token step."""
        decode = self.phase("decode")
        return self.batch * 1e3 / decode.summary.p50 if decode else None

    def key(self) -> tuple:
        return (self.export, self.provider, self.precision, self.batch, self.sequence)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["phases"] = [p.to_dict() for p in self.phases]
        d["derived"] = {
            "latency_p50_ms": self.latency.p50,
            "sequences_per_s": self.sequences_per_s,
            "tokens_per_s": self.tokens_per_s,
            "prefill_ms": self.prefill_ms,
            "decode_tokens_per_s": self.decode_tokens_per_s,
        }
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Row:
        d = {k: v for k, v in d.items() if k != "derived"}
        return cls(**{**d, "phases": [Phase.from_dict(p) for p in d["phases"]]})


@dataclass
class PlacementRecord:
    """Where the nodes of one graph of an export ran on one provider (from an ORT profile)."""

    export: str
    provider: str
    graph: str
    requested: str  # ORT name of the provider asked for
    kernels: dict[str, int]  # ORT provider name -> kernels it ran
    fallback: list[str]  # "op_type node_name" of every kernel that ran elsewhere

    @property
    def ran(self) -> int:
        return self.kernels.get(self.requested, 0)


@dataclass
class Unavailable:
    """A provider that no environment here has: said in one line, with how to get it."""

    provider: str
    reason: str
    fix: str

    def line(self) -> str:
        return f"{self.provider}: not available: {self.reason}. Fix: {self.fix}"


@dataclass
class AccuracyRecord:
    """How close one benched model is to the PyTorch model on held-out text (``--optimum``, Hugging Face)."""

    export: str  # the row label it belongs to
    task: str  # sentence_embedding (pooled-embedding cosine) or lm (perplexity, top-1 agreement)
    data: str  # where the evaluation text came from
    against: str  # the reference
    perplexity: float | None = None
    agreement: float | None = None  # top-1 agreement with the reference
    cosine: float | None = None  # mean per-sample cosine of pooled embeddings (encoders), of logits (LMs)
    cosine_min: float | None = None  # the least per-sample cosine (encoders)
    pytorch: bool = False  # the reference itself (its label is the checkpoint's, like its eager rows)

    def cell(self) -> str:
        """The table's accuracy cell."""
        if self.task == "sentence_embedding":
            return "reference" if self.cosine is None else f"cos {self.cosine:.5f} / min {self.cosine_min:.5f}"
        parts = [f"ppl {self.perplexity:.4g}"] if self.perplexity is not None else []
        parts += [f"top-1 {self.agreement:.1%}"] if self.agreement is not None else ["reference"]
        return ", ".join(parts)


@dataclass
class BenchResult:
    machine: dict
    versions: dict[str, str]  # of this (the orchestrating) environment
    environments: dict[str, dict]  # provider -> the environment that ran it (python, onnxruntime, numpy)
    settings: dict
    plan: dict
    rows: list[Row] = field(default_factory=list)
    placements: list[PlacementRecord] = field(default_factory=list)
    unavailable: list[Unavailable] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # configurations that did not run, one line each
    created: str = ""
    schema: str = SCHEMA
    accuracy: list[AccuracyRecord] = field(default_factory=list)  # per row label, on held-out text (--optimum)
    optimum: list[dict] = field(default_factory=list)  # Optimum's exports benched: label, file, recipe, attention ops

    def to_dict(self) -> dict:
        return {
            "schema": self.schema,
            "created": self.created,
            "machine": self.machine,
            "versions": self.versions,
            "environments": self.environments,
            "settings": self.settings,
            "plan": self.plan,
            "rows": [r.to_dict() for r in self.rows],
            "placements": [asdict(p) for p in self.placements],
            "unavailable": [asdict(u) for u in self.unavailable],
            "failures": list(self.failures),
            "accuracy": [asdict(a) for a in self.accuracy],
            "optimum": list(self.optimum),
        }

    @classmethod
    def from_dict(cls, d: dict) -> BenchResult:
        if d.get("schema") != SCHEMA:
            raise ValueError(f"not a {SCHEMA} result (schema {d.get('schema')!r})")
        return cls(
            d["machine"], d["versions"], d["environments"], d["settings"], d["plan"],
            [Row.from_dict(r) for r in d["rows"]],
            [PlacementRecord(**p) for p in d["placements"]],
            [Unavailable(**u) for u in d["unavailable"]],
            list(d["failures"]), d.get("created", ""), d["schema"],
            [AccuracyRecord(**a) for a in d.get("accuracy", [])], list(d.get("optimum", [])),
        )  # fmt: skip

    def dumps(self) -> str:
        return json.dumps(self.to_dict(), indent=1) + "\n"

    def save(self, path: str | os.PathLike) -> Path:
        """Write the JSON atomically (temporary file beside it, then rename)."""
        return write_atomic(Path(path), self.dumps().encode())

    @classmethod
    def load(cls, path: str | os.PathLike) -> BenchResult:
        return cls.from_dict(json.loads(Path(path).read_text()))

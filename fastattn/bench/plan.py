"""What ``fastattn bench`` measures and how: typed, validated once, recorded in the JSON.

A :class:`Plan` names the exports, the providers, the batch sizes and sequence lengths and an
optional PyTorch checkpoint for the eager baseline; :class:`Settings` say how each
configuration is timed. A :class:`Job` is one configuration (one export on one provider at one
batch and sequence length), the unit a worker process measures. Bad values are an
:class:`~fastattn.errors.InputError` here, before anything runs.

Torch-free: workers in other provider environments import this module.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import onnxruntime as ort

from fastattn.errors import InputError
from fastattn.runtime.providers import Provider
from fastattn.runtime.web import is_web

PYTORCH = "pytorch"  # the provider name of PyTorch eager rows


def default_threads() -> int:
    """The CPUs this process may run on (its affinity mask): the default intra-op thread count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class ProviderChoice:
    """An execution provider as the user named it, resolved once."""

    name: str  # short name (cpu, openvino, cuda, ...), or the ORT name when fastattn has no short one
    ort_name: str

    @property
    def provider(self) -> Provider | None:
        return Provider.find(self.name)

    @classmethod
    def parse(cls, text: str) -> ProviderChoice:
        """``cpu``, ``OpenVINO``, ``CUDAExecutionProvider`` -> a choice; an unknown name is an InputError."""
        name = text.strip()
        if is_web(name):  # onnxruntime-web, driven in Node (fastattn.runtime.web)
            return cls(name.lower(), name.lower())
        provider = Provider.find(name)
        if provider is not None:
            return cls(provider.name.lower(), provider.info.ort_name)
        ort_name = next((n for n in ort.get_all_providers() if n.lower() == name.lower()), None)
        if ort_name is None:
            raise InputError(
                f"unknown execution provider {text!r}",
                f"use one of {', '.join(Provider.short_names())} or a full ONNX Runtime name (CUDAExecutionProvider)",
            )
        return cls(ort_name, ort_name)


@dataclass(frozen=True)
class Settings:
    """How each configuration is timed (all recorded in the JSON)."""

    threads: int = field(default_factory=default_threads)  # intra-op threads: ORT, OpenVINO and torch alike
    warmup: int = 5  # untimed runs before the timed block
    repeats: int = 20  # at least this many timed runs ...
    min_time: float = 1.0  # ... and at least this many seconds of them
    max_repeats: int = 100_000  # a cap for very fast configurations
    decode_steps: int = 16  # decoders: single-token steps per decode round (0: no decode)
    pause: float = 0.1  # seconds of sleep before each timed block (let other threads go idle)
    seed: int = 0  # sample inputs: the same seed gives every engine the same arrays
    isolate: bool = True  # each configuration in its own worker process (honest peak memory)
    timeout: float = 3600.0  # seconds a worker may take for one configuration

    def __post_init__(self) -> None:
        checks = [
            ("threads", self.threads >= 1, "a thread count of at least 1"),
            ("warmup", self.warmup >= 0, "0 or more warm-up runs"),
            ("repeats", self.repeats >= 1, "at least 1 repetition"),
            ("min_time", self.min_time >= 0, "a time of 0 seconds or more"),
            ("max_repeats", self.max_repeats >= self.repeats, "a cap no lower than --repeats"),
            ("decode_steps", self.decode_steps >= 0, "0 or more decode steps"),
            ("pause", self.pause >= 0, "a pause of 0 seconds or more"),
            ("timeout", self.timeout > 0, "a positive timeout"),
        ]
        for name, ok, want in checks:
            if not ok:
                raise InputError(f"bad {name.replace('_', '-')} {getattr(self, name)!r}", f"pass {want}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Settings:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass(frozen=True)
class Plan:
    """Everything one ``fastattn bench`` run measures."""

    exports: tuple[Path, ...]
    providers: tuple[ProviderChoice, ...] = (ProviderChoice("cpu", "CPUExecutionProvider"),)
    batches: tuple[int, ...] = (1,)
    sequences: tuple[int, ...] = (128,)
    sweep: bool = False  # sequences are a scaling sweep: the table adds the log-log slope between lengths
    torch_models: tuple[Path, ...] = ()  # checkpoints for the PyTorch eager baseline
    allow_pickle: bool = False  # a torch model that is a pickled nn.Module (runs code from the file)
    match_target: bool = False  # run an export only on the provider it was lowered for (portable: all)
    settings: Settings = field(default_factory=Settings)
    optimum: tuple[Path, ...] = ()  # Hugging Face checkpoints: Optimum's exports of each become rows too
    optimum_variants: tuple[str, ...] = ("fp32", "o3", "int8")  # fastattn.bench.optimum.Variant values

    def __post_init__(self) -> None:
        if not self.exports:
            raise InputError("no export directory given", "pass the output directory of `fastattn export`")
        if not self.providers:
            raise InputError("no execution provider given", "pass -p cpu (repeatable)")
        for name, values in (("batch size", self.batches), ("sequence length", self.sequences)):
            if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
                raise InputError(f"bad {name}s {list(values)}", "pass positive integers, e.g. 1,8")
        if self.sweep and len(self.sequences) < 2:
            raise InputError("a sequence sweep needs at least two lengths", "e.g. --sweep-seq 512,1024,2048")

    @classmethod
    def create(
        cls,
        exports: Iterable[str | os.PathLike],
        providers: Iterable[str] = ("cpu",),
        batches: Sequence[int] = (1,),
        sequences: Sequence[int] = (128,),
        sweep: bool = False,
        torch_models: Iterable[str | os.PathLike] = (),
        allow_pickle: bool = False,
        match_target: bool = False,
        settings: Settings | None = None,
        optimum: Iterable[str | os.PathLike] = (),
        optimum_variants: Sequence[str] = ("fp32", "o3", "int8"),
    ) -> Plan:
        """A plan from plain values: provider names resolved, duplicates dropped, sweeps sorted. An Optimum
        checkpoint also gives PyTorch eager rows (it is the reference of the accuracy column)."""
        choices = tuple(dict.fromkeys(ProviderChoice.parse(p) for p in providers))
        sequences = tuple(sorted(set(sequences))) if sweep else tuple(dict.fromkeys(sequences))
        checkpoints = tuple(dict.fromkeys(Path(c) for c in optimum))
        torch_paths = tuple(dict.fromkeys([*(Path(t) for t in torch_models), *checkpoints]))
        return cls(
            tuple(Path(e) for e in exports), choices, tuple(dict.fromkeys(batches)), sequences, sweep,
            torch_paths, allow_pickle, match_target, settings or Settings(), checkpoints, tuple(optimum_variants),
        )  # fmt: skip

    def to_dict(self) -> dict:
        return {
            "exports": [str(e) for e in self.exports],
            "providers": [p.name for p in self.providers],
            "batches": list(self.batches),
            "sequences": list(self.sequences),
            "sweep": self.sweep,
            "torch_models": [str(t) for t in self.torch_models],
            "match_target": self.match_target,
            "optimum": [str(c) for c in self.optimum],
            "optimum_variants": list(self.optimum_variants),
        }


def parse_sizes(text: str, what: str) -> tuple[int, ...]:
    """``"1,8"`` -> (1, 8); anything else is an InputError naming ``what``."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or any(v < 1 for v in values):
        raise InputError(f"bad {what} {text!r}", "pass positive integers separated by commas, e.g. 128,512")
    return values


@dataclass(frozen=True)
class Job:
    """One configuration: one export on one provider (or PyTorch eager) at one batch size and length."""

    directory: str
    label: str  # how the export is named in tables
    provider: str  # a ProviderChoice name, or "pytorch"
    batch: int
    sequence: int
    settings: Settings
    checkpoint: str | None = None  # PyTorch eager: the model file
    allow_pickle: bool = False
    optimum: str | None = None  # an Optimum export's model file; ``directory`` is the fastattn export giving inputs
    optimum_precision: str = "fp32"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["settings"] = self.settings.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Job:
        return cls(**{**d, "settings": Settings.from_dict(d["settings"])})

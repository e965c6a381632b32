"""Execution providers, resolved in one place.

A user names providers by short name (``cpu``, ``cuda``, ``openvino``, ...) or by their
full ONNX Runtime name (``CUDAExecutionProvider``). :func:`resolve` turns those names into
the ``providers`` list for ``ort.InferenceSession``: each provider with its default
options, the CPU provider last as the fallback. A provider that is unknown, or known but
not in this onnxruntime install, is a :class:`~fastattn.errors.ProviderError` that says
what is available and which pip distribution provides the missing one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

import onnxruntime as ort

from fastattn.errors import ProviderError

ProviderEntry = str | tuple[str, dict[str, str]]  # what ort.InferenceSession(providers=...) takes
CPU = "CPUExecutionProvider"


@dataclass(frozen=True)
class ProviderInfo:
    """What fastattn knows about one execution provider."""

    ort_name: str
    package: str | None  # the pip distribution that ships it; None: only in source builds
    replaces_onnxruntime: bool = True  # the wheel replaces the plain `onnxruntime` one
    options: tuple[tuple[str, str], ...] = ()  # default provider options
    sequential: bool = False  # needs sequential execution and no memory pattern (DirectML)
    also: tuple[str, ...] = ()  # ORT names to add after it when available (TensorRT -> CUDA)
    note: str = ""  # said in the install hint

    def install_hint(self) -> str:
        """How to get this provider, as the ``Fix:`` part of an error."""
        if self.package is None:
            return f"use an onnxruntime built with it{self.note}"
        if not self.replaces_onnxruntime:
            return f"pip install {self.package}{self.note}"
        return (
            f"pip install {self.package} in its own virtual environment "
            f"(it replaces the plain onnxruntime wheel){self.note}"
        )


class Provider(Enum):
    """Execution providers by short name (``Provider["CUDA"]``); aliases share one entry."""

    CPU = ProviderInfo(CPU, "onnxruntime", replaces_onnxruntime=False)
    CUDA = ProviderInfo("CUDAExecutionProvider", "onnxruntime-gpu", note=" with CUDA and cuDNN installed")
    TENSORRT = ProviderInfo(
        "TensorrtExecutionProvider",
        "onnxruntime-gpu",
        also=("CUDAExecutionProvider",),
        note=" with TensorRT, CUDA and cuDNN installed",
    )
    OPENVINO = ProviderInfo("OpenVINOExecutionProvider", "onnxruntime-openvino")
    DML = ProviderInfo("DmlExecutionProvider", "onnxruntime-directml", sequential=True, note=" on Windows")
    DIRECTML = DML  # alias
    COREML = ProviderInfo(
        "CoreMLExecutionProvider",
        "onnxruntime",
        replaces_onnxruntime=False,
        options=(("ModelFormat", "MLProgram"),),
        note=" on macOS (the macOS wheel ships CoreML)",
    )
    ROCM = ProviderInfo("ROCMExecutionProvider", "onnxruntime-rocm")
    MIGRAPHX = ProviderInfo("MIGraphXExecutionProvider", "onnxruntime-migraphx")
    QNN = ProviderInfo("QNNExecutionProvider", "onnxruntime-qnn", note=" on Windows on Arm")
    XNNPACK = ProviderInfo("XnnpackExecutionProvider", None, note=" (build option --use_xnnpack)")
    WEBGPU = ProviderInfo("WebGpuExecutionProvider", None, note=" (build option --use_webgpu)")

    @property
    def info(self) -> ProviderInfo:
        return self.value

    @classmethod
    def short_names(cls) -> list[str]:
        """Every accepted short name, aliases included, lower case."""
        return [name.lower() for name in cls.__members__]

    @classmethod
    def find(cls, name: str) -> Provider | None:
        """The provider with this short name (any case) or full ORT name (any case), else None."""
        member = cls.__members__.get(name.upper())
        if member is not None:
            return member
        return next((p for p in cls if p.info.ort_name.lower() == name.lower()), None)


def available_providers() -> list[str]:
    """The ORT names of the providers this onnxruntime install can use."""
    return list(ort.get_available_providers())


def _known_ort_name(name: str) -> str | None:
    """The canonical spelling of a full ORT provider name that fastattn has no short name for."""
    return next((n for n in ort.get_all_providers() if n.lower() == name.lower()), None)


def _unknown(name: str) -> ProviderError:
    return ProviderError(
        f"unknown execution provider {name!r}",
        f"use one of {', '.join(Provider.short_names())} or a full ONNX Runtime name (CUDAExecutionProvider)",
    )


def _not_installed(
    name: str, ort_name: str, info: ProviderInfo | None, available: Sequence[str]
) -> ProviderError:
    label = ort_name if name == ort_name else f"{name!r} ({ort_name})"
    fix = info.install_hint() if info else f"install an onnxruntime build that includes {ort_name}"
    return ProviderError(
        f"execution provider {label} is not in this onnxruntime install, which has {', '.join(available)}",
        fix,
    )


def resolve(
    names: Sequence[str | tuple[str, Mapping[str, str]]],
    available: Sequence[str] | None = None,
) -> list[ProviderEntry]:
    """The ``providers`` list for ``ort.InferenceSession`` from short or full names, in order.

    An entry may be ``(name, options)`` to replace a provider's default options. Names are
    matched case-insensitively; duplicates keep their first place; the CPU provider is
    appended as the fallback unless listed. ``available`` (ORT names) defaults to what this
    install has, and lets tests simulate another install.
    """
    have = list(available) if available is not None else available_providers()
    out: dict[str, dict[str, str]] = {}
    for entry in names:
        name, options = (entry, None) if isinstance(entry, str) else (entry[0], dict(entry[1]))
        provider = Provider.find(name.strip())
        info = provider.info if provider else None
        ort_name = info.ort_name if info else _known_ort_name(name.strip())
        if ort_name is None:
            raise _unknown(name)
        if ort_name not in have:
            raise _not_installed(name, ort_name, info, have)
        if ort_name not in out:
            out[ort_name] = options if options is not None else dict(info.options if info else {})
        for extra in info.also if info else ():
            also = Provider.find(extra)
            if extra in have and extra not in out:
                out[extra] = dict(also.info.options) if also is not None else {}
    out.setdefault(CPU, {})
    return [(name, opts) if opts else name for name, opts in out.items()]


def ort_names(providers: Sequence[ProviderEntry]) -> list[str]:
    """The provider names of a resolved list, without their options."""
    return [p if isinstance(p, str) else p[0] for p in providers]


def configure(options: ort.SessionOptions, providers: Sequence[ProviderEntry]) -> None:
    """Apply what a provider needs from the session options (DirectML: sequential, no memory pattern)."""
    for name in ort_names(providers):
        provider = Provider.find(name)
        if provider is not None and provider.info.sequential:
            options.enable_mem_pattern = False
            options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL

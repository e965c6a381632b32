"""Installed versions of the software that shaped a result (an export, a measurement). Standard library only."""

from __future__ import annotations

import platform
from collections.abc import Iterable
from importlib import metadata

EXPORT = ("fastattn", "torch", "onnx", "onnx-ir", "onnxscript", "onnxruntime", "numpy", "transformers")


def installed(distributions: Iterable[str] = EXPORT) -> dict[str, str]:
    """Python's version and each installed distribution's (those not installed are left out)."""
    found = {"python": platform.python_version()}
    for dist in distributions:
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return found

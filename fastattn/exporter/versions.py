"""What an export records about the software that made it."""

from __future__ import annotations

import platform
from importlib import metadata

DISTRIBUTIONS = ("fastattn", "torch", "onnx", "onnx-ir", "onnxscript", "onnxruntime", "numpy", "transformers")


def versions() -> dict[str, str]:
    """Versions of everything that shaped the export."""
    found = {"python": platform.python_version()}
    for dist in DISTRIBUTIONS:
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return found

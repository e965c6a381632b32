"""The output directory, written all at once.

Everything is written into a hidden staging directory beside the destination and moved
into place with renames at the end, so an interrupted or failed export never leaves a
half-written model under the destination name. A model that fails validation is kept,
for inspection, as ``<destination>.rejected``, never as the destination.
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

import onnx_ir as ir

from fastattn.errors import InputError

# Above this many bytes of weights, save them beside the graph (model.onnx.data);
# protobuf cannot hold a file over 2 GiB.
EXTERNAL_DATA_THRESHOLD = 1 << 30


def check_destination(destination: Path, force: bool) -> None:
    """Refuse to overwrite a non-empty directory (or any file) unless ``force``."""
    if destination.exists() and not destination.is_dir():
        raise InputError(f"{destination} exists and is not a directory", "choose another output path with -o")
    if destination.is_dir() and any(destination.iterdir()) and not force:
        raise InputError(f"output directory {destination} is not empty", "pass --force to replace it, or use -o")


class Staging:
    """A temporary directory that becomes ``destination`` on :meth:`commit`, and vanishes otherwise."""

    def __init__(self, destination: Path):
        self.destination = destination.resolve()
        self.destination.parent.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix=f".{self.destination.name}.", dir=self.destination.parent))

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, *exc) -> None:
        if self.path.exists():
            shutil.rmtree(self.path, ignore_errors=True)

    def commit(self) -> Path:
        """Replace the destination with the staged directory (the old one is removed only after)."""
        return self._move_to(self.destination)

    def reject(self) -> Path:
        """Keep the staged directory as ``<destination>.rejected`` for inspection."""
        return self._move_to(self.destination.with_name(self.destination.name + ".rejected"))

    def _move_to(self, target: Path) -> Path:
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
            os.replace(target, old / "x")
        os.replace(self.path, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return target


def save_model(model: ir.Model, directory: Path, file: str, threshold: int = EXTERNAL_DATA_THRESHOLD) -> list[str]:
    """Save ``model`` as ``directory/file``; weights go to ``file.data`` when they exceed ``threshold`` bytes."""
    size = sum(v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None)
    if size > threshold:
        ir.save(model, directory / file, external_data=f"{file}.data", size_threshold_bytes=1024)
        return [file, f"{file}.data"]
    ir.save(model, directory / file)
    return [file]


def versions() -> dict[str, str]:
    """Versions of everything that shaped the export."""
    found = {"python": platform.python_version()}
    for dist in ("fastattn", "torch", "onnx", "onnx-ir", "onnxscript", "onnxruntime", "numpy"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return found

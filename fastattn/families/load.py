"""Load ``model.pt`` in every form fastattn accepts, recognised by content, not by suffix.

    format            how it is recognised                         loaded with
    FASTATTN          torch.save'd dict with ``"format": "fastattn"``  torch.load(weights_only=True)
    TORCHSCRIPT       zip archive with ``code/`` and ``constants.pkl``  torch.jit.load
    EXPORTED_PROGRAM  zip archive with ``models/*.json`` (.pt2)         torch.export.load
    PICKLED_MODULE    torch.save(model): weights_only refuses it        torch.load(weights_only=False),
                                                                       only with ``allow_pickle=True``

Nothing is unpickled with arbitrary globals unless the caller opted in: a whole pickled
``nn.Module`` is recognised because ``torch.load(weights_only=True)`` refuses its globals,
and unpickling it runs code from the file. Every failure is one line (:class:`InputError`
for a path that is not a file, :class:`LoadError` for a file that is not a loadable model).
"""

from __future__ import annotations

import logging
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import torch

import fastattn.attention.op  # noqa: F401  (registers torch.ops.fastattn, which .pt2 files may contain)
from fastattn.errors import InputError, LoadError

log = logging.getLogger(__name__)

_PICKLE_MAGIC = b"\x80"  # every pickle protocol >= 2 starts with PROTO
_ZIP_MAGIC = b"PK"
# torch's weights-only unpickler names the global it refused in two ways (torch 2.13)
_UNSUPPORTED_GLOBAL = re.compile(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)")
# Modules whose functions run commands or code: a pickle that calls them is an attack, not a model
_DANGEROUS = ("posix", "nt", "os", "subprocess", "builtins", "sys", "shutil", "socket", "runpy", "importlib",
              "pty", "code", "ctypes", "webbrowser")


class ModelFormat(str, Enum):
    """What a model file holds."""

    FASTATTN = "fastattn checkpoint"
    TORCHSCRIPT = "TorchScript archive"
    EXPORTED_PROGRAM = "torch.export program (.pt2)"
    PICKLED_MODULE = "pickled nn.Module"


@dataclass
class LoadedModel:
    """A loaded model: ``module`` (eval mode) or ``ExportedProgram``, or a fastattn ``checkpoint`` payload."""

    format: ModelFormat
    source: Path
    module: torch.nn.Module | torch.export.ExportedProgram | None = None
    checkpoint: dict[str, Any] | None = field(default=None, repr=False)
    notes: list[str] = field(default_factory=list)  # for the report

    def describe(self) -> str:
        """``model.pt (TorchScript archive)``: for the manifest's ``source`` and the report."""
        return f"{self.source.name} ({self.format.value})"


def load_model(path: str | Path, allow_pickle: bool = False, code: Path | None = None) -> LoadedModel:
    """Load a model file; the format is detected from its content.

    ``allow_pickle`` permits unpickling a whole ``nn.Module`` saved with ``torch.save(model)``,
    which runs code from the file: only for files the user trusts. ``code`` is the Python file
    that defines its classes (imported, not run; :mod:`fastattn.families.user_code`).
    """
    if code is not None and not allow_pickle:
        raise InputError("--code imports and runs a Python file, the trust --allow-pickle asks for",
                         "add --allow-pickle, or drop --code")  # fmt: skip
    path = _check_path(Path(path))
    with path.open("rb") as f:
        head = f.read(4)
    if not head:
        raise LoadError(
            f"{path} is empty", "pass a model saved with torch.save, torch.jit.save or torch.export.save"
        )
    if zipfile.is_zipfile(path):
        kind = _zip_kind(path)
        if kind is ModelFormat.TORCHSCRIPT:
            return _load_torchscript(path)
        if kind is ModelFormat.EXPORTED_PROGRAM:
            return _load_program(path)
        return _load_saved(path, allow_pickle, code)
    if head.startswith(_ZIP_MAGIC):
        raise LoadError(f"{path} is a damaged zip archive (truncated?)", "save or copy the model file again")
    if head.startswith(_PICKLE_MAGIC):
        return _load_saved(path, allow_pickle, code)
    raise LoadError(
        f"{path} is not a PyTorch file (neither a torch.save/TorchScript/.pt2 zip archive nor a pickle)",
        "pass a model saved with torch.save, torch.jit.save or torch.export.save",
    )


def _check_path(path: Path) -> Path:
    if not path.exists():
        raise InputError(f"no such file: {path}", "check the model path")
    if path.is_dir():
        raise InputError(
            f"{path} is a directory without config.json: neither a model file nor a Hugging Face checkpoint",
            "pass the model file itself (e.g. model.pt), or a directory written by save_pretrained",
        )
    return path


def _zip_kind(path: Path) -> ModelFormat | None:
    """TORCHSCRIPT or EXPORTED_PROGRAM from the archive's entries; None for a torch.save archive."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as e:
        raise LoadError(f"{path} is a damaged zip archive ({e})", "save or copy the model file again") from e
    # Entries live under one top-level folder named after the file at save time.
    entries = {name.split("/", 1)[1] for name in names if "/" in name}
    if "constants.pkl" in entries and any(e.startswith("code/") for e in entries):
        return ModelFormat.TORCHSCRIPT
    if "archive_format" in entries or any(e.startswith("models/") and e.endswith(".json") for e in entries):
        return ModelFormat.EXPORTED_PROGRAM
    if "data.pkl" in entries:
        return None
    raise LoadError(
        f"{path} is a zip archive but not a PyTorch one (no data.pkl, code/ or models/)",
        "pass a model saved with torch.save, torch.jit.save or torch.export.save",
    )


def _load_torchscript(path: Path) -> LoadedModel:
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as e:  # torch.jit reports archive problems as RuntimeError and friends
        raise LoadError(f"{path} is a TorchScript archive that failed to load: {_first_line(e)}") from e
    log.info("loaded TorchScript archive %s", path)
    return LoadedModel(ModelFormat.TORCHSCRIPT, path, module.eval())


def _load_program(path: Path) -> LoadedModel:
    try:
        program = torch.export.load(str(path))
    except Exception as e:  # deserialisation errors come in many types
        raise LoadError(
            f"{path} is a .pt2 archive that failed to load: {_first_line(e)}",
            f"load it with the torch version that saved it (this is torch {torch.__version__})",
        ) from e
    log.info("loaded ExportedProgram %s", path)
    return LoadedModel(ModelFormat.EXPORTED_PROGRAM, path, program)


def _load_saved(path: Path, allow_pickle: bool, code: Path | None = None) -> LoadedModel:
    """A torch.save file: a fastattn checkpoint (weights only) or, with consent, a pickled module."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        blocked = _UNSUPPORTED_GLOBAL.search(str(e))
        if blocked is None:
            raise _damaged(path, _unpickler_detail(e)) from e
        name = blocked.group(1)
        if not allow_pickle and name.split(".")[0] in _DANGEROUS:
            raise LoadError(f"{path} was refused: unpickling it would call {name}, which runs commands or code",
                            "do not load this file; a model file never needs to call it") from None  # fmt: skip
        if not allow_pickle:
            raise LoadError(
                f"{path} was refused: it holds a pickled Python object ({name}), and unpickling it runs code "
                "from the file",
                "rerun with --allow-pickle if you trust the file, "
                "or save a TorchScript or torch.export (.pt2) model",
            ) from None
        return _load_pickled(path, code)
    except Exception as e:  # corrupt archives raise RuntimeError, EOFError, KeyError, ...
        raise _damaged(path, _first_line(e)) from e
    if isinstance(obj, dict) and obj.get("format") == "fastattn":
        log.info("loaded fastattn checkpoint %s", path)
        return LoadedModel(ModelFormat.FASTATTN, path, checkpoint=obj)
    raise LoadError(f"{path} holds {_what(obj)}, not a model", _fix_for(obj))


def _load_pickled(path: Path, code: Path | None = None) -> LoadedModel:
    log.warning("unpickling %s with weights_only=False (--allow-pickle): this runs code from the file", path)
    extra = {}
    if code is not None:
        from fastattn.families.user_code import import_code, pickle_module

        extra["pickle_module"] = pickle_module(import_code(code))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False, **extra)
    except Exception as e:  # anything can happen while unpickling foreign code
        raise LoadError(
            f"{path} failed to unpickle: {_first_line(e)}",
            "pass the file that defines the model's classes with --code FILE.py, or save it as TorchScript or .pt2",
        ) from e
    if not isinstance(obj, torch.nn.Module):
        raise LoadError(f"{path} holds {_what(obj)}, not an nn.Module", _fix_for(obj))
    kind = f"{type(obj).__module__}.{type(obj).__qualname__}"
    note = f"unpickled with --allow-pickle: {kind} (this ran code from the file)"
    if code is not None:
        note += f"; classes from --code {code.name}"
    return LoadedModel(ModelFormat.PICKLED_MODULE, path, obj.eval(), notes=[note])


def _what(obj: object) -> str:
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return f"a state dict ({len(obj)} tensors)"
    return f"a {type(obj).__name__}"


def _fix_for(obj: object) -> str:
    if isinstance(obj, dict):
        return (
            "weights alone do not define a model: save the module (torch.jit.save, torch.export.save) instead"
        )
    return "pass a model saved with torch.save(model), torch.jit.save or torch.export.save"


def _damaged(path: Path, detail: str) -> LoadError:
    detail = "" if detail.isdigit() else f" ({detail})"  # the legacy reader reports a bad magic number bare
    return LoadError(
        f"{path} is a damaged or foreign torch.save file{detail}", "save the model again with torch.save"
    )


def _unpickler_detail(e: BaseException) -> str:
    """What torch's weights-only unpickler objected to (its message starts with generic advice)."""
    _, found, detail = str(e).partition("WeightsUnpickler error:")
    lines = [line.strip() for line in detail.splitlines() if line.strip()] if found else []
    return lines[0] if lines else _first_line(e)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__

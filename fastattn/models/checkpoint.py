"""The fastattn checkpoint: ``model.pt`` = config + state dict, loadable with ``weights_only=True``.

Saving writes to a temporary file and renames it, so an interrupted save never leaves a
truncated checkpoint under the final name.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from fastattn.errors import LoadError
from fastattn.models.config import ModelConfig
from fastattn.models.transformer import FastAttnModel

FORMAT = "fastattn"
VERSION = 1


def is_checkpoint(payload: object) -> bool:
    return isinstance(payload, dict) and payload.get("format") == FORMAT


def save(model: FastAttnModel, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "version": VERSION, "config": model.config.to_dict(), "state_dict": model.state_dict()}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def from_payload(payload: dict, source: str = "checkpoint") -> FastAttnModel:
    """Build the model from a loaded checkpoint dict (``torch.load(path, weights_only=True)``)."""
    if payload.get("version") != VERSION:
        raise LoadError(f"{source} is fastattn checkpoint version {payload.get('version')}, expected {VERSION}")
    try:
        config = ModelConfig.from_dict(payload["config"])
        model = FastAttnModel.from_config(config)
        model.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise LoadError(f"{source} is a damaged fastattn checkpoint: {e}", "re-save it with fastattn") from e
    return model.eval()


def load(path: str | os.PathLike) -> FastAttnModel:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not is_checkpoint(payload):
        raise LoadError(f"{path} is not a fastattn checkpoint")
    return from_payload(payload, str(path))

"""The fastattn checkpoint: ``model.pt`` = config + state dict, loadable with ``weights_only=True``.

Optional keys, written by ``fastattn train`` (absent from older checkpoints, which still load):

    tokenizer  dict   ``{"kind": "bytes", ...}`` (:mod:`fastattn.train.tokenizer`)
    eval       dict   name -> int64 tensor: a held-out evaluation set named like the exported
                      graphs' inputs, plus ``labels`` (shapes in :mod:`fastattn.train.tasks`)
    metrics    dict   name -> float: the model's own figures on ``eval`` (loss, perplexity, ...)

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


def save(
    model: FastAttnModel,
    path: str | os.PathLike,
    tokenizer: dict | None = None,
    eval_data: dict[str, torch.Tensor] | None = None,
    metrics: dict[str, float] | None = None,
) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "version": VERSION, "config": model.config.to_dict(), "state_dict": model.state_dict()}
    if tokenizer is not None:
        payload["tokenizer"] = dict(tokenizer)
    if eval_data is not None:  # own storage each: a view would save the whole tensor it views
        payload["eval"] = {name: t.detach().to(torch.int64).contiguous().clone() for name, t in eval_data.items()}
    if metrics is not None:
        payload["metrics"] = {name: float(v) for name, v in metrics.items()}
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


def extras(payload: dict) -> tuple[dict | None, dict[str, torch.Tensor] | None, dict[str, float] | None]:
    """(tokenizer, eval data, metrics) of a loaded checkpoint; None for each one it lacks."""
    found = []
    for key in ("tokenizer", "eval", "metrics"):
        value = payload.get(key)
        if value is not None and not isinstance(value, dict):
            raise LoadError(f"checkpoint key {key!r} holds a {type(value).__name__}, not a dict", "re-save it")
        found.append(value)
    tokenizer, eval_data, metrics = found
    return tokenizer, eval_data, metrics


def load(path: str | os.PathLike) -> FastAttnModel:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not is_checkpoint(payload):
        raise LoadError(f"{path} is not a fastattn checkpoint")
    return from_payload(payload, str(path))

"""A local Hugging Face checkpoint directory: ``config.json`` and the weights beside it.

    config.json                                   required; ``model_type`` names the family
    model.safetensors                             one file, or
    model.safetensors.index.json + shards         sharded (``weight_map`` names each tensor's file), or
    pytorch_model.bin[.index.json + shards]       read with ``torch.load(weights_only=True)`` only
    tokenizer.json, tokenizer_config.json, ...    carried into the export when present

Nothing is ever downloaded: ``HF_HUB_OFFLINE=1`` is set before transformers is imported
and every transformers call passes ``local_files_only=True``. Every problem is one line
(:class:`LoadError`): no config.json, unreadable JSON, no weights, a damaged safetensors
file, a shard the index names but the directory lacks.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fastattn.errors import InputError, LoadError

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers / huggingface_hub read it
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

log = logging.getLogger(__name__)

CONFIG = "config.json"
SAFETENSORS, SAFETENSORS_INDEX = "model.safetensors", "model.safetensors.index.json"
BIN, BIN_INDEX = "pytorch_model.bin", "pytorch_model.bin.index.json"
# Files an export carries beside its graphs (tokenizer and generation settings; config.json for
# apps such as Optimum that rebuild the transformers config).
CARRIED = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
           "special_tokens_map.json")  # fmt: skip
FIX = "pass a directory written by save_pretrained (config.json + model.safetensors)"


def is_checkpoint_dir(path: Path) -> bool:
    """Whether ``path`` is a directory meant as a Hugging Face checkpoint (it has a config.json)."""
    return path.is_dir() and (path / CONFIG).is_file()


@dataclass
class Checkpoint:
    """What a checkpoint directory holds; tensors are read by :meth:`tensors`."""

    directory: Path
    config: dict  # config.json as written
    weights: list[Path]  # the files holding tensors
    index: dict[str, str] = field(default_factory=dict)  # tensor -> file name (sharded checkpoints)

    @property
    def model_type(self) -> str:
        return str(self.config.get("model_type", ""))

    @property
    def architecture(self) -> str:
        names = self.config.get("architectures") or []
        return str(names[0]) if names else ""

    def carried_files(self) -> dict[str, Path]:
        """The files an export copies from the checkpoint, by name."""
        return {name: self.directory / name for name in CARRIED if (self.directory / name).is_file()}

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor of the checkpoint, in float32 (integer buffers as they are), old LayerNorm
        names (``gamma``/``beta``) renamed to ``weight``/``bias`` as transformers does."""
        found: dict[str, torch.Tensor] = {}
        for path in self.weights:
            found.update(_read(path))
        missing = sorted(set(self.index) - set(found))
        if missing:
            raise LoadError(f"{self.directory} index names tensors its shards lack ({', '.join(missing[:3])})",
                            "copy the checkpoint again")  # fmt: skip
        return {_rename(k): (v.float() if v.is_floating_point() else v) for k, v in found.items()}


def read_checkpoint(directory: Path) -> Checkpoint:
    """Check a checkpoint directory and find its weights; reads headers, not tensors."""
    directory = Path(directory)
    if not directory.exists():
        raise InputError(f"no such directory: {directory}", "check the checkpoint path")
    config_path = directory / CONFIG
    if not config_path.is_file():
        raise LoadError(f"{directory} has no {CONFIG}, so it is not a Hugging Face checkpoint", FIX)
    try:
        config = json.loads(config_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LoadError(f"{config_path} is not readable JSON ({e})", "save the checkpoint again") from e
    if not isinstance(config, dict) or not config.get("model_type"):
        raise LoadError(f"{config_path} names no model_type", "save the checkpoint with save_pretrained")
    weights, index = _weight_files(directory)
    for path in weights:
        if path.suffix == ".safetensors":
            _check_safetensors(path)
    return Checkpoint(directory, config, weights, index)


def _weight_files(directory: Path) -> tuple[list[Path], dict[str, str]]:
    for single, index_name in ((SAFETENSORS, SAFETENSORS_INDEX), (BIN, BIN_INDEX)):
        if (directory / single).is_file():
            return [directory / single], {}
        index_path = directory / index_name
        if index_path.is_file():
            try:
                weight_map = json.loads(index_path.read_text())["weight_map"]
                files = sorted(set(weight_map.values()))
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
                raise LoadError(f"{index_path} is not a valid index ({e})", "copy the checkpoint again") from e
            absent = [f for f in files if not (directory / f).is_file()]
            if absent:
                raise LoadError(f"{directory} lacks {absent[0]}, a shard its {index_name} names",
                                "copy every shard of the checkpoint")  # fmt: skip
            return [directory / f for f in files], dict(weight_map)
    raise LoadError(
        f"{directory} has no weights ({SAFETENSORS}, {SAFETENSORS_INDEX}, {BIN} or {BIN_INDEX})",
        "save the model with save_pretrained into this directory",
    )


def _check_safetensors(path: Path) -> None:
    """Read the header: a truncated or foreign file fails here, in one line, before anything runs."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            f.keys()
    except Exception as e:  # SafetensorError, OSError, ValueError: a damaged file in any way
        raise LoadError(f"{path} is a damaged safetensors file ({_first_line(e)})",
                        "copy or save the checkpoint again") from e  # fmt: skip


def _read(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # damaged data past the header, or a pickle with code in it
        raise LoadError(f"{path} cannot be read ({_first_line(e)})", "copy or save the checkpoint again") from e
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise LoadError(f"{path} does not hold a state dict of tensors", "save the model with save_pretrained")
    return state


def _rename(name: str) -> str:
    if name.endswith(".gamma"):
        return name[: -len("gamma")] + "weight"
    if name.endswith(".beta"):
        return name[: -len("beta")] + "bias"
    return name


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__

"""Checkpoint tensors -> a fastattn state dict, by a family's weight table.

Every key of the fastattn model's state dict must be produced by exactly the table (a key no
pattern covers is a bug in the family spec); every tensor must have the shape the fastattn
model has. Checkpoint tensors no rule reads are returned, for the report (a BERT pooler,
a masked-LM head, GPT-2's ``attn.bias`` buffers).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from fastattn.errors import LoadError
from fastattn.families.hf.spec import HFConfig, Src, WeightTable


def strip_prefix(tensors: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Checkpoint names inside the bare model (``model.layers.0...`` -> ``layers.0...``); heads keep theirs."""
    if not prefix:
        return dict(tensors)
    return {k.removeprefix(prefix): v for k, v in tensors.items()}


def map_weights(
    weight_table: WeightTable,
    target: Mapping[str, torch.Tensor],
    tensors: Mapping[str, torch.Tensor],
    hf_config: HFConfig,
    source: str,
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(fastattn state dict, checkpoint tensors left unused) for the fastattn ``target`` state dict."""
    rules = [(_compile(pattern), src) for pattern, src in weight_table.items()]
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for key, param in target.items():
        rule = next(((m, src) for regex, src in rules if (m := regex.fullmatch(key))), None)
        if rule is None:
            raise RuntimeError(f"no weight rule produces fastattn tensor {key!r}: the family spec is incomplete")
        match, src = rule
        tensor = _resolve(src, match.groupdict(), tensors, hf_config, param.shape, key, source, used)
        if tuple(tensor.shape) != tuple(param.shape):
            raise LoadError(f"{source}: the tensor for {key} has shape {tuple(tensor.shape)}, the config asks for "
                            f"{tuple(param.shape)}", "check that config.json belongs to these weights")  # fmt: skip
        out[key] = tensor.to(param.dtype).contiguous()
    return out, sorted(set(tensors) - used)


def _compile(pattern: str) -> re.Pattern:
    return re.compile(re.escape(pattern).replace(re.escape("{i}"), r"(?P<i>\d+)"))


def _resolve(src: Src, groups: dict, tensors: Mapping[str, torch.Tensor], hf_config: HFConfig, shape: torch.Size,
             key: str, source: str, used: set[str]) -> torch.Tensor:  # fmt: skip
    if src.computed is not None:
        return src.computed(hf_config, shape)
    names = [name.format(**groups) for name in src.names]
    if src.sources > 1:  # combine: all names are needed
        absent = [n for n in names if n not in tensors]
        if absent:
            raise _missing(source, absent[0], key)
        used.update(names)
        return src.fn(*(tensors[n] for n in names))
    found = next((n for n in names if n in tensors), None)
    if found is None:
        if src.optional:
            return torch.zeros(shape)
        raise _missing(source, " or ".join(names), key)
    used.update(n for n in names if n in tensors)  # tied copies a checkpoint may hold too
    tensor = tensors[found]
    return src.fn(tensor) if src.fn is not None else tensor


def _missing(source: str, name: str, key: str) -> LoadError:
    return LoadError(f"{source} has no tensor {name} (fastattn's {key})",
                     "check that the weights are complete and belong to config.json")  # fmt: skip

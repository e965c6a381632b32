"""fastattn's own models: a checkpoint (config + weights) built by ``fastattn create`` or ``train``.

    graphs.py   the graphs of each arch (flat-tensor wrappers, cache pairs, named dims)
    fusions.py  the fusion counts each graph should get, from the config
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from fastattn.errors import InputError, LoadError
from fastattn.families.base import Family, FastDecode, ModelSource, Prepared, PrepareRequest
from fastattn.families.fastattn.fusions import expected_counts
from fastattn.families.fastattn.graphs import DIMS, max_length, model_graphs, windows
from fastattn.families.load import ModelFormat
from fastattn.models import checkpoint
from fastattn.models.config import ModelConfig
from fastattn.quantize.accuracy import EvalSet
from fastattn.runtime.manifest import Arch, Manifest


class FastAttnFamily(Family):
    name = "fastattn"
    description = "fastattn checkpoints (fastattn create / train)"

    def claims(self, source: ModelSource) -> bool:
        return source.path.is_file() and source.loaded.format is ModelFormat.FASTATTN

    def prepare(self, source: ModelSource, request: PrepareRequest) -> Prepared:
        path, payload = source.path, source.loaded.checkpoint
        if request.inputs:
            raise InputError(f"{path.name} is a fastattn checkpoint, which declares its own inputs",
                             "drop --input (it is for models that are not fastattn's own)")  # fmt: skip
        model = checkpoint.from_payload(payload, str(path))
        cfg = model.config
        checkpoint.extras(payload)  # a tokenizer, held-out set or metrics of the wrong kind: one line now
        if request.kv_buffer and cfg.arch is not Arch.DECODER:
            raise InputError(f"--kv-buffer is for decoder-only models; {path.name} is an {cfg.arch.value}",
                             "export without --kv-buffer")  # fmt: skip
        graphs = model_graphs(model, whole_cache=request.kv_buffer)
        tokenizer = payload.get("tokenizer")
        return Prepared(
            family=self.name,
            graphs=graphs,
            arch=cfg.arch,
            source=f"{path.name} (fastattn checkpoint, preset {cfg.name!r})",
            config=cfg.to_dict(),
            dims=dict(DIMS),
            longest_window=max(windows(cfg), default=0),
            max_length=cfg.max_positions if request.kv_buffer else max_length(cfg),  # kv-buffer: its rotary tables
            expected_fusions={g.name: expected_counts(cfg, g.name) for g in graphs},
            eval_set=_eval_set(payload, path),
            files={"tokenizer.json": (json.dumps(tokenizer, indent=2) + "\n").encode()} if tokenizer else {},
            fast_decode=fast_decode(cfg) if request.kv_buffer else None,
        )

    def expected_fusions(self, manifest: Manifest) -> dict[str, dict[str, int]]:
        if manifest.config is None:
            return {}
        cfg = ModelConfig.from_dict(manifest.config)
        return {g.name: expected_counts(cfg, g.name) for g in manifest.graphs}


def fast_decode(cfg: ModelConfig) -> FastDecode:
    """The --kv-buffer path of a fastattn model: GQA's rotary tables follow its rope."""
    return FastDecode(cfg.rope_theta, cfg.head_size, cfg.max_positions, cfg.rope_scaling)


def _eval_set(payload: dict, path: Path) -> EvalSet | None:
    arrays = payload.get("eval")
    if not arrays:
        return None
    if not all(isinstance(v, torch.Tensor) for v in arrays.values()):
        raise LoadError(f"{path} holds a held-out set that is not tensors", "re-save it with fastattn train")
    return EvalSet({k: v.numpy() for k, v in arrays.items()}, f"held-out data in {path.name}")

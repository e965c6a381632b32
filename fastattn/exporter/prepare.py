"""From a model file to the graphs to export: fastattn checkpoints declare their own inputs,
other models get them from ``--input`` specs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fastattn.errors import InputError
from fastattn.exporter.accuracy import EvalSet
from fastattn.exporter.declare import declare
from fastattn.exporter.fusion.expected import expected_counts
from fastattn.exporter.graphs import GraphDef
from fastattn.exporter.input_spec import foreign_graph
from fastattn.exporter.load import LoadedModel, ModelFormat, load_model
from fastattn.exporter.model_graphs import DIMS, max_length, model_graphs, windows
from fastattn.models import checkpoint
from fastattn.models.config import Arch
from fastattn.runtime.manifest import TensorSpec


@dataclass
class Prepared:
    graphs: list[GraphDef]
    arch: str
    source: str
    config: dict | None = None  # fastattn models only
    dims: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # for the report
    longest_window: int = 0
    max_length: int | None = None  # position limit of the model (validation stays within it)
    expected_fusions: dict[str, dict[str, int]] = field(default_factory=dict)  # graph -> fusion -> count
    eval_set: EvalSet | None = None  # held-out data a trained checkpoint carries (quantization gates)
    tokenizer: dict | None = None  # the tokenizer a trained checkpoint carries
    files: dict[str, Path] = field(default_factory=dict)  # copied into the export as they are (name -> source)
    hf: dict | None = None  # the manifest's ``hf`` section (Hugging Face checkpoints)


def prepare(path: Path, inputs: tuple[TensorSpec, ...], allow_pickle: bool, kv_buffer: bool = False,
            task: str | None = None, code: Path | None = None) -> Prepared:  # fmt: skip
    from fastattn.hf import hf_route, pretrained_route  # noqa: PLC0415  (transformers only when needed)

    hooked = hf_route(path, inputs, allow_pickle, kv_buffer, task)
    if hooked is not None:
        return hooked
    loaded = load_model(path, allow_pickle=allow_pickle, code=code)
    hooked = pretrained_route(path, loaded, inputs, kv_buffer, task)
    if hooked is not None:
        return hooked
    if kv_buffer and loaded.format is not ModelFormat.FASTATTN:
        raise InputError(f"--kv-buffer needs a fastattn checkpoint; {path.name} is {loaded.format.value}",
                         "export without --kv-buffer")  # fmt: skip
    if loaded.format is ModelFormat.FASTATTN:
        if inputs:
            raise InputError(
                f"{path.name} is a fastattn checkpoint, which declares its own inputs",
                "drop --input (it is for models that are not fastattn's own)",
            )
        model = checkpoint.from_payload(loaded.checkpoint, str(path))
        cfg = model.config
        if kv_buffer and cfg.arch is not Arch.DECODER:
            raise InputError(f"--kv-buffer is for decoder-only models; {path.name} is an {cfg.arch.value}",
                             "export without --kv-buffer")  # fmt: skip
        graphs = model_graphs(model, whole_cache=kv_buffer)
        return Prepared(
            graphs=graphs,
            arch=cfg.arch.value,
            source=f"{path.name} (fastattn checkpoint, preset {cfg.name!r})",
            config=cfg.to_dict(),
            dims=dict(DIMS),
            longest_window=max(windows(cfg), default=0),
            max_length=cfg.max_positions if kv_buffer else max_length(cfg),  # kv-buffer: its rotary tables
            expected_fusions={g.name: expected_counts(cfg, g.name) for g in graphs},
            eval_set=_eval_set(loaded.checkpoint, path),
            tokenizer=loaded.checkpoint.get("tokenizer"),
        )
    return _prepare_foreign(path, loaded, inputs)


def _eval_set(payload: dict, path: Path) -> EvalSet | None:
    arrays = payload.get("eval")
    if not arrays:
        return None
    return EvalSet({k: v.numpy() for k, v in arrays.items()}, f"held-out data in {path.name}")


def _prepare_foreign(path: Path, loaded: LoadedModel, inputs: tuple[TensorSpec, ...]) -> Prepared:
    """One graph from ``--input`` specs (a .pt2 may omit them), its attention declared as the fastattn op."""
    graph = foreign_graph(loaded, list(inputs))
    declared_graph, declared = declare(graph)
    declared_graph.reference = graph.module  # validate against the user's own module, not the rewrite
    return Prepared(
        graphs=[declared_graph],
        arch="module",
        source=loaded.describe(),
        notes=[*loaded.notes, declared.summary()],
    )

"""The exporter's view of a Hugging Face checkpoint: graphs of the mapped fastattn model, each with the
transformers model itself as its validation reference, plus what the export carries.

    prepare_checkpoint(dir, task, kv_buffer)     a local checkpoint directory
    prepare_pretrained(module, path, task, ...)  an unpickled ``PreTrainedModel`` (--allow-pickle)

The export gets the checkpoint's ``config.json`` and tokenizer files as they are (Optimum and
``tokenizers`` read them), a manifest ``hf`` section (family, task, EOS/pad/decoder-start ids),
and an evaluation set of held-out text tokenized with the model's own tokenizer for the
quantization gates (:mod:`fastattn.families.hf.eval_text`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from torch import nn

from fastattn.errors import InputError
from fastattn.families.base import Prepared
from fastattn.families.fastattn import fast_decode
from fastattn.families.fastattn.fusions import expected_counts
from fastattn.families.fastattn.graphs import DIMS, max_length, model_graphs, windows
from fastattn.families.hf import architectures, generic
from fastattn.families.hf.checkpoint import read_checkpoint
from fastattn.families.hf.convert import Converted, convert, convert_module, family_of
from fastattn.families.hf.eval_text import text_eval_set
from fastattn.families.hf.optimum_names import with_optimum_names
from fastattn.families.hf.reference import load_reference, references
from fastattn.families.hf.spec import FAMILY, Task
from fastattn.runtime.manifest import Arch
from fastattn.runtime.records import HfRecord

log = logging.getLogger(__name__)


def prepare_checkpoint(directory: Path, task: str | None = None, kv_buffer: bool = False) -> Prepared:
    checkpoint = read_checkpoint(directory)
    if architectures.find(checkpoint.model_type) is None and checkpoint.model_type not in architectures.REFUSED:
        fits, why = generic.supports(checkpoint)
        if not fits:
            family_of(checkpoint.model_type, checkpoint.architecture, why)  # raises, naming the supported ones
        if kv_buffer:
            raise InputError(f"--kv-buffer needs a fastattn family spec; {checkpoint.model_type} has none",
                             "export without --kv-buffer")  # fmt: skip
        chosen = None if task is None else generic_task(task, checkpoint.architecture)
        return generic.prepare_generic(checkpoint, chosen)
    converted = convert(checkpoint, task)
    _check_kv_buffer(converted, kv_buffer, directory.name)
    hf = load_reference(checkpoint.directory, converted.task)
    files = checkpoint.carried_files()
    generation = _json(files.get("generation_config.json"))
    architecture = checkpoint.architecture or "no architecture"
    source = f"{directory.name} (Hugging Face checkpoint, {converted.family.name}, {architecture})"
    return _prepared(converted, hf, source, files, generation, kv_buffer)


def prepare_pretrained(module: nn.Module, path: Path, task: str | None = None, kv_buffer: bool = False,
                       notes: list[str] | None = None) -> Prepared:  # fmt: skip
    converted = convert_module(module, task, str(path))
    _check_kv_buffer(converted, kv_buffer, path.name)
    hf = load_reference(module, converted.task)
    generation = module.generation_config.to_dict() if getattr(module, "generation_config", None) else {}
    source = f"{path.name} (pickled {type(module).__name__}, {converted.family.name})"
    prepared = _prepared(converted, hf, source, {}, generation, kv_buffer)
    prepared.notes = [*(notes or []), *prepared.notes]
    return prepared


def generic_task(requested: str, architecture: str) -> Task:
    """``--task`` for the AttentionInterface fallback: feature-extraction or text-generation."""
    from fastattn.families.hf.spec import TASK_ALIASES

    task = TASK_ALIASES.get(requested) or next((t for t in Task if t.value == requested), None)
    if task not in (Task.FEATURE_EXTRACTION, Task.TEXT_GENERATION):
        raise InputError(f"--task {requested!r} is not one the AttentionInterface fallback exports ({architecture})",
                         "use feature-extraction or text-generation")  # fmt: skip
    return task


def _check_kv_buffer(converted: Converted, kv_buffer: bool, name: str) -> None:
    if kv_buffer and converted.model.config.arch is not Arch.DECODER:
        raise InputError(f"--kv-buffer is for decoder-only models; {name} is {converted.task.value}",
                         "export without --kv-buffer")  # fmt: skip


def _prepared(converted: Converted, hf: Any, source: str, files: dict[str, Path], generation: dict,
              kv_buffer: bool) -> Prepared:  # fmt: skip
    cfg = converted.model.config
    graphs = model_graphs(converted.model, whole_cache=kv_buffer)
    refs = references(hf, converted.family, converted.task, kv_buffer)
    for graph in graphs:
        graph.reference = refs[graph.name]
    if cfg.arch is Arch.DECODER:  # Optimum's cache names: ORTModelForCausalLM opens the export as it is
        graphs = [with_optimum_names(g) for g in graphs]
    info = hf_section(converted, generation, files)
    tokenizer = files.get("tokenizer.json")
    eval_set = None
    if tokenizer is not None:
        limit = cfg.max_positions if kv_buffer else max_length(cfg)
        eval_set = text_eval_set(tokenizer, converted.task, info.pad_token_id or 0, info.decoder_start_token_id,
                                 limit)  # fmt: skip
    return Prepared(
        family=FAMILY,
        graphs=graphs,
        arch=cfg.arch,
        source=source,
        config=cfg.to_dict(),
        dims=dict(DIMS),
        notes=converted.notes(),
        longest_window=max(windows(cfg), default=0),
        max_length=cfg.max_positions if kv_buffer else max_length(cfg),
        expected_fusions={g.name: expected_counts(cfg, g.name) for g in graphs},
        eval_set=eval_set,
        files=dict(files),
        hf=info,
        fast_decode=fast_decode(cfg) if kv_buffer else None,
    )


def hf_section(converted: Converted, generation: dict, files: dict[str, Path]) -> HfRecord:
    """The manifest's ``hf`` section: what the checkpoint was and how to generate with it."""
    config = converted.hf_config

    def pick(name: str):
        value = generation.get(name)
        return value if value is not None else getattr(config, name, None)

    eos = pick("eos_token_id")
    eos_ids = [] if eos is None else [int(e) for e in (eos if isinstance(eos, list) else [eos])]
    architectures = getattr(config, "architectures", None) or []
    start = pick("decoder_start_token_id") if converted.task is Task.TEXT2TEXT_GENERATION else None
    pad = pick("pad_token_id")
    bos = pick("bos_token_id")
    return HfRecord(
        model_type=config.model_type, family=converted.family.name, task=converted.task.value,
        architecture=architectures[0] if architectures else None, eos_token_ids=eos_ids,
        pad_token_id=None if pad is None else int(pad), bos_token_id=None if bos is None else int(bos),
        decoder_start_token_id=None if start is None else int(start), files=sorted(files),
    )  # fmt: skip


def _json(path: Path | None) -> dict:
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        log.warning("ignoring unreadable %s", path)
        return {}
    return data if isinstance(data, dict) else {}

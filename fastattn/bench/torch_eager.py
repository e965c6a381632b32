"""PyTorch eager on the same weights and the same inputs as an export: the baseline rows.

The checkpoint is loaded the way the exporter loads it (:func:`fastattn.families.registry.prepare`:
a fastattn checkpoint with ``weights_only=True``; TorchScript, ``.pt2`` or, with
``allow_pickle``, a pickled module), into the same flat-tensor graphs the export was captured
from, so inputs and outputs line up by name with the manifest. A fastattn checkpoint must have
the export's config (else the comparison would be between different models).

Timing follows :mod:`fastattn.bench.measure` exactly: the same phases, the same sample arrays
(same seed), the same blocks, under ``torch.inference_mode`` with ``torch.set_num_threads``;
peak memory is measured the same way, from before the checkpoint is loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from fastattn.bench.measure import (
    CpuShare,
    Memory,
    attention_label,
    check_length,
    decode_round,
    model_name,
    phase_plan,
    sizes_for,
    step_inputs,
    time_rounds,
    timed,
)
from fastattn.bench.plan import PYTORCH, Job
from fastattn.bench.records import Phase, Row
from fastattn.errors import InputError
from fastattn.families.base import PrepareRequest
from fastattn.families.registry import prepare
from fastattn.runtime.manifest import GraphEntry, Manifest
from fastattn.runtime.session import sample_graph

SDPA = "sdpa"  # Hugging Face models: transformers' default attention, what a user of the checkpoint runs


def checkpoint_config(path: str | Path) -> dict | None:
    """The model config of a fastattn checkpoint; None for other model files (or no config)."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # not a weights-only torch.save file: TorchScript, .pt2, pickled module
        return None
    return payload.get("config") if isinstance(payload, dict) and payload.get("format") == "fastattn" else None


def same_model(a: dict | None, b: dict | None) -> bool:
    """Whether two config dicts describe the same architecture (names aside)."""
    if a is None or b is None:
        return a is b
    strip = lambda d: {k: v for k, v in d.items() if k != "name"}  # noqa: E731
    return strip(a) == strip(b)


def _modules(job: Job, manifest: Manifest) -> dict[str, torch.nn.Module]:
    inputs = tuple(manifest.graphs[0].inputs) if manifest.config is None else ()
    task = manifest.hf.task if manifest.hf is not None else None
    prepared = prepare(Path(job.checkpoint), PrepareRequest(inputs, job.allow_pickle, manifest.kv_buffer is not None,
                                                            task))  # fmt: skip
    if manifest.config is not None and not same_model(prepared.config, manifest.config):
        raise InputError(
            f"{job.checkpoint} is not the model exported in {job.directory} (their configs differ)",
            "pass the checkpoint the export was made from",
        )
    modules = {}
    for graph in prepared.graphs:
        module = graph.reference if graph.reference is not None else graph.module
        if prepared.hf is not None:  # the transformers model itself, timed with its default attention (sdpa)
            module.hf.set_attn_implementation(SDPA)
        modules[graph.name] = module.module() if isinstance(module, torch.export.ExportedProgram) else module
    return modules


def _tensors(arrays: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {n: torch.from_numpy(np.ascontiguousarray(a)) for n, a in arrays.items()}


def _flat(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for item in (out.values() if isinstance(out, Mapping) else out) for t in _flat(item)]


def _call(module: torch.nn.Module, entry: GraphEntry, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The module on the inputs in the graph's input order; outputs by the graph's output names."""
    out = _flat(module(*(inputs[s.name] for s in entry.inputs)))
    return dict(zip((s.name for s in entry.outputs), out, strict=True))


def measure_torch(job: Job) -> Row:
    """Measure PyTorch eager on ``job.checkpoint`` with the inputs of the export in ``job.directory``."""
    if not job.checkpoint:
        raise InputError("no PyTorch model given for the eager baseline", "pass --torch model.pt")
    settings = job.settings
    manifest = Manifest.load(job.directory)
    check_length(manifest, job.label, job.sequence, settings.decode_steps)
    phases = phase_plan(manifest, settings.decode_steps)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        return _measure(job, manifest, phases)
    finally:
        torch.set_num_threads(threads_before)  # in process (--in-process), leave the caller's setting alone


def _measure(job: Job, manifest: Manifest, phases) -> Row:
    settings = job.settings
    memory = Memory()
    memory.reset()
    baseline = memory.rss_mb()
    modules = _modules(job, manifest)
    results, starts, share = [], {}, CpuShare()
    with torch.inference_mode():
        for spec in phases:
            entry, module = spec.graph, modules[spec.graph.name]
            if spec.name == "decode":
                steps = step_inputs(entry, job.batch, job.sequence, settings.decode_steps, settings.seed)
                round_ = decode_round(lambda feeds: _call(module, entry, feeds), {p.past: p.present for p in entry.cache},
                                      starts[entry.name], [_tensors(s) for s in steps])  # fmt: skip
                sizes = sizes_for(entry, job.batch, 1, past=job.sequence)
                samples, warm = time_rounds(round_, settings, len(steps))
            else:
                sizes = sizes_for(entry, job.batch, job.sequence)
                inputs = _tensors(sample_graph(entry, sizes, settings.seed))
                samples, warm = time_rounds(timed(lambda m=module, e=entry, i=inputs: _call(m, e, i)), settings)
                if entry.cache:
                    out = _call(module, entry, inputs)
                    starts[entry.name] = {p.past: out[p.present] for p in entry.cache}
            results.append(Phase(spec.name, entry.name, sizes, samples, warm))
    peak = memory.peak_mb()
    return Row(
        model=model_name(manifest), export=Path(job.checkpoint).name, directory=str(job.checkpoint), target="eager",
        attention=attention_label(manifest), precision="fp32", provider=PYTORCH,
        engine=f"torch {torch.__version__}" + (f" (transformers, {SDPA})" if manifest.hf is not None else ""),
        batch=job.batch, sequence=job.sequence, phases=results,
        peak_memory_mb=None if peak is None or baseline is None else round(peak - baseline, 1),
        threads=settings.threads, others_cpu=share.others(),
    )  # fmt: skip

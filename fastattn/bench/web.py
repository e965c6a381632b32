"""``fastattn bench -p wasm``: one configuration timed on onnxruntime-web in Node, as a bench Row.

The phases, inputs and timing method are those of :mod:`fastattn.bench.measure` (inputs made here
from the manifest with the same seeds, so every provider gets the same arrays; the worker times
the same blocks). Differences, said in the row: no IOBinding (onnxruntime-web copies inputs into
the wasm heap at every run, as an app does), and peak memory is the Node process's high-water
mark over its RSS before the sessions. WebGPU takes the same path and is reported unavailable
where Node has no WebGPU adapter (no GPU here).
"""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path

from fastattn.bench.measure import attention_label, check_length, model_name, phase_plan, sizes_for, step_inputs
from fastattn.bench.plan import Job, ProviderChoice
from fastattn.bench.records import Phase, Row, Unavailable
from fastattn.errors import LoadError, ProviderError
from fastattn.runtime.manifest import Manifest
from fastattn.runtime.session import sample_graph
from fastattn.runtime.web.node import INSTALL, runtime, write_tensors

log = logging.getLogger(__name__)


def locate(choice: ProviderChoice, isolate: bool = True):
    """The bench Environment of a web provider (workers of this Python drive Node), or Unavailable."""
    from fastattn.bench.run import Environment

    try:
        web = runtime()
    except ProviderError as e:
        return Unavailable(choice.name, e.what, e.fix or INSTALL)
    reply = web.call({"op": "probe"}, timeout=120)
    if not reply["ok"]:
        return Unavailable(choice.name, f"onnxruntime-web does not start: {reply['error']}", INSTALL)
    info = reply["result"]
    if choice.name not in info["available"]:
        why = info["missing"].get(choice.name, "not available")
        return Unavailable(choice.name, f"onnxruntime-web {info['onnxruntime_web']}: {why}",
                           "run examples/web in a browser on a machine with a GPU")  # fmt: skip
    info = {**info, "python": sys.executable, "package": str(web.package)}
    return Environment(choice.name, Path(sys.executable) if isolate else None, info)


def measure(job: Job) -> Row:
    """Time one configuration on onnxruntime-web (see the module doc)."""
    settings = job.settings
    manifest = Manifest.load(job.directory)
    check_length(manifest, job.label, job.sequence, settings.decode_steps)
    web = runtime()
    directory = Path(job.directory).resolve()
    off = set(manifest.session.memory_pattern_off)
    disabled = list(manifest.session.disabled_optimizers)
    plan = phase_plan(manifest, settings.decode_steps)
    graphs = {s.graph.name: {"file": str(directory / s.graph.file), "disabled_optimizers": disabled,
                             "mem_pattern": s.graph.name not in off} for s in plan}  # fmt: skip
    sizes_of, phases = {}, []
    with tempfile.TemporaryDirectory(prefix="fastattn-web-") as tmp:
        for i, spec in enumerate(plan):
            entry = spec.graph
            if spec.name == "decode":
                steps = step_inputs(entry, job.batch, job.sequence, settings.decode_steps, settings.seed)
                sizes_of[spec.name] = sizes_for(entry, job.batch, 1, past=job.sequence)
                phases.append({"name": "decode", "graph": entry.name,
                               "steps": [write_tensors(s, Path(tmp), f"{i}-{k}") for k, s in enumerate(steps)],
                               "cache": [{"past": p.past, "present": p.present} for p in entry.cache]})  # fmt: skip
            else:
                sizes_of[spec.name] = sizes_for(entry, job.batch, job.sequence)
                inputs = sample_graph(entry, sizes_of[spec.name], settings.seed)
                phases.append({"name": spec.name, "graph": entry.name, "inputs": write_tensors(inputs, Path(tmp), str(i)),
                               "cache": [{"past": p.past, "present": p.present} for p in entry.cache]})  # fmt: skip
        request = {"op": "phases", "provider": job.provider, "threads": settings.threads, "graphs": graphs,
                   "phases": phases, "settings": {k: getattr(settings, k) for k in
                                                  ("warmup", "repeats", "min_time", "max_repeats", "pause")}}  # fmt: skip
        reply = web.call(request, settings.timeout)
    if not reply["ok"]:
        raise LoadError(f"onnxruntime-web ({job.provider}) failed on {job.label}: {reply['error']}",
                        "see the worker's stderr with -v")  # fmt: skip
    result = reply["result"]
    version = result["onnxruntime_web"]
    return Row(
        model=model_name(manifest), export=job.label, directory=str(Path(job.directory)), target=manifest.target,
        attention=attention_label(manifest), precision=manifest.precision, provider=job.provider,
        engine=f"onnxruntime-web {version}", batch=job.batch, sequence=job.sequence,
        phases=[Phase(p["name"], s.graph.name, sizes_of[p["name"]], p["samples_ms"], p["warmup_runs"])
                for p, s in zip(result["phases"], plan, strict=True)],
        peak_memory_mb=round(result["peak_rss_mb"] - result["baseline_rss_mb"], 1),
        session_providers=[job.provider], threads=settings.threads, iobinding=False, others_cpu=None,
    )  # fmt: skip

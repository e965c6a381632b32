"""Run a :class:`~fastattn.bench.plan.Plan`: every configuration, each where its provider lives.

For each provider: when this environment's onnxruntime has it, its configurations run in
worker processes of this Python; otherwise in worker processes of the Python of the
environment that has it (``fastattn.runtime.environments.python_for``: ``.venv-<provider>``
or ``$FASTATTN_<PROVIDER>_PYTHON``), after a probe that checks that its onnxruntime really
has the provider. A provider that no environment has becomes one line saying so and how to
get it; the other providers still run. Each configuration is one worker process and one
block of runs (see :mod:`fastattn.bench.measure`), so nothing is interleaved and peak memory
is per configuration. With ``Settings.isolate`` off, configurations of providers available
here run in this process instead (faster; peak memory is then not per configuration: memory
that earlier configurations freed gets reused, arenas they grew may still be held).

Bad input (a directory without ``fastattn.json``, an unknown provider, a sequence longer than
the model's positions, a checkpoint that is not the exported model) is an
:class:`~fastattn.errors.InputError` before anything runs. A configuration that fails while
running (an EP that cannot load the graph, a worker killed for memory) is a line in
``failures`` and the rest goes on.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import onnxruntime as ort

from fastattn.bench import machine
from fastattn.bench.measure import check_length
from fastattn.bench.plan import PYTORCH, Job, Plan, ProviderChoice
from fastattn.bench.records import BenchResult, PlacementRecord, Row, Unavailable
from fastattn.bench.stats import PERCENTILE_METHOD
from fastattn.bench.worker import call, environment
from fastattn.errors import InputError
from fastattn.runtime.environments import python_for
from fastattn.runtime.manifest import Manifest
from fastattn.runtime.providers import Provider
from fastattn.runtime.web import is_web

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
METHOD = {
    "blocks": "each configuration alone in a fresh worker process: pause, warm-up runs (at least `warmup` "
    "and two, more while runs still change by over 1.5x, up to 10 s), then timed runs until at least "
    "`repeats` samples and `min_time` seconds; never interleaved",
    "noise": "others_cpu: share of the machine's CPU time used by other processes during the blocks",
    "percentiles": PERCENTILE_METHOD,
    "throughput": "from the median: sequences/s = batch / p50, tokens/s = batch * sequence / p50, "
    "decode tokens/s = batch / median step",
    "iobinding": "inputs bound once as OrtValues on the provider's device, outputs bound to the device; "
    "decode feeds present back as past without copies",
    "peak_memory": "rise of the worker's resident-set high-water mark (VmHWM, reset via /proc/self/clear_refs) "
    "over its RSS just before the session (or the PyTorch model) is created, read after the last timed run",
}
MAX_ERROR = 200  # characters of a failure's message kept in its line


@dataclass(frozen=True)
class Export:
    directory: Path
    label: str
    manifest: Manifest


@dataclass(frozen=True)
class Environment:
    """Where a provider's configurations run: a worker of ``python``, or this process (None)."""

    name: str
    python: Path | None
    info: dict


def load_exports(paths: tuple[Path, ...]) -> list[Export]:
    """The exports with their manifests; labels are directory names, with the parent when two clash."""
    manifests = [Manifest.load(p) for p in paths]
    for path, manifest in zip(paths, manifests, strict=True):
        for graph in manifest.graphs:  # a file leading outside the export, or missing: one line before any run
            if not manifest.path_of(path, graph.file).is_file():
                raise InputError(f"{path / graph.file} is missing (graph {graph.name!r})", "re-export the model")
    names = [p.resolve().name for p in paths]
    labels = [f"{p.resolve().parent.name}/{n}" if names.count(n) > 1 else n for p, n in zip(paths, names, strict=True)]
    return [Export(p, label, m) for p, label, m in zip(paths, labels, manifests, strict=True)]


def install_fix(choice: ProviderChoice) -> str:
    """How to get a provider into an environment fastattn bench finds."""
    provider = choice.provider
    env = f".venv-{choice.name}"
    if provider is Provider.OPENVINO:
        return "make openvino-env (creates .venv-openvino with onnxruntime-openvino)"
    if provider is None or provider.info.package is None:
        return (provider.info.install_hint() if provider else f"use an onnxruntime built with {choice.ort_name}") + (
            f", in {env} or the environment named by $FASTATTN_{choice.name.upper()}_PYTHON"
        )
    if not provider.info.replaces_onnxruntime:
        return provider.info.install_hint()
    return (
        f"python -m venv {env} && {env}/bin/pip install {provider.info.package} numpy{provider.info.note} "
        f"(or set $FASTATTN_{choice.name.upper()}_PYTHON to a Python that has it)"
    )


def locate(choice: ProviderChoice, isolate: bool = True) -> Environment | Unavailable:
    """The environment that has the provider, checked by a probe; or why none has it."""
    if is_web(choice.name):
        from fastattn.bench.web import locate as locate_web

        return locate_web(choice, isolate)
    if choice.ort_name in ort.get_available_providers():
        return Environment(choice.name, Path(sys.executable) if isolate else None, environment())
    fix = install_fix(choice)
    python = python_for(choice.name)
    if python is None or not python.exists():
        where = f"{python} does not exist" if python else f"no .venv-{choice.name} found"
        return Unavailable(
            choice.name,
            f"this environment's onnxruntime {ort.__version__} lacks {choice.ort_name} and {where}",
            fix,
        )
    reply = call(python, {"op": "probe"}, timeout=300)
    if not reply["ok"]:
        return Unavailable(choice.name, f"its environment ({python}) does not answer: {reply['error']}", fix)
    info = reply["result"]
    if choice.ort_name not in info["available"]:
        return Unavailable(
            choice.name,
            f"the onnxruntime {info['onnxruntime']} of {python} has only {', '.join(info['available'])}",
            fix,
        )
    return Environment(choice.name, python, info)


def pair_torch(plan: Plan, exports: list[Export]) -> dict[str, Path]:
    """Export label -> the checkpoint whose eager rows go with it (the first export of the same model)."""
    if not plan.torch_models:
        return {}
    if importlib.util.find_spec("torch") is None:
        raise InputError("--torch needs PyTorch in this environment", "install fastattn with its dependencies")
    from fastattn.bench.torch_eager import checkpoint_config, same_model

    pairs: dict[str, Path] = {}
    for path in plan.torch_models:
        if path.is_dir():  # a Hugging Face checkpoint: the export of the same config.json
            from fastattn.bench.optimum import pair

            free = [e for e in exports if e.label not in pairs]
            directory, _ = pair(path, [(e.directory, e.manifest) for e in free], any_task=True)
            pairs[next(e.label for e in free if e.directory == directory)] = path
            continue
        if not path.is_file():
            raise InputError(f"no such file: {path}", "pass the model file the export was made from (model.pt)")
        config = checkpoint_config(path)
        match = next((e for e in exports if same_model(config, e.manifest.config) and e.label not in pairs), None)
        if match is None:
            raise InputError(
                f"{path} is not the model of any export given ({', '.join(e.label for e in exports)})",
                "pass the checkpoint an export was made from",
            )
        pairs[match.label] = path
    return pairs


def _failure(export: Export, provider: str, job: Job | None, error: str, skipped: str = "") -> str:
    where = f"{job.label if job else export.label} on {provider}" + (f" at batch {job.batch}, seq {job.sequence}" if job else "")
    where += f" ({skipped} skipped)" if skipped else ""
    line = f"{where}: {error[:MAX_ERROR]}{'…' if len(error) > MAX_ERROR else ''}"
    target = export.manifest.target
    if provider != PYTORCH and target not in ("portable", provider):
        line += f" (this export was lowered for {target}: export with --target {provider} for this provider)"
    return line


def bench(plan: Plan, progress: Progress | None = None) -> BenchResult:
    """Measure every configuration of ``plan`` and return the merged result."""
    step = progress or (lambda message: log.info(message))
    settings = plan.settings
    exports = load_exports(plan.exports)
    for export in exports:
        for sequence in plan.sequences:
            check_length(export.manifest, export.label, sequence, settings.decode_steps)
    torch_pairs = pair_torch(plan, exports)
    result = BenchResult(
        machine=machine.describe(settings.threads), versions=machine.versions(), environments={},
        settings={**settings.to_dict(), "method": METHOD}, plan=plan.to_dict(),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )  # fmt: skip
    environments: dict[str, Environment] = {}
    for choice in plan.providers:
        step(f"looking for {choice.name}")
        found = locate(choice, settings.isolate)
        if isinstance(found, Unavailable):
            result.unavailable.append(found)
        else:
            environments[choice.name] = found
            result.environments[choice.name] = found.info
    if torch_pairs:
        torch_python = Path(sys.executable) if settings.isolate else None
        environments[PYTORCH] = Environment(PYTORCH, torch_python, {"python": sys.executable,
                                            "torch": metadata.version("torch")})  # fmt: skip
        result.environments[PYTORCH] = environments[PYTORCH].info

    optimum = _optimum_models(plan, exports, result, step)
    for export in exports:
        for name, env in list(environments.items()):
            if name == PYTORCH:
                continue
            if plan.match_target and export.manifest.target not in ("portable", name):
                continue
            if not _run_provider(plan, export, env, result, step):
                del environments[name]  # the provider cannot run here after all: said once, not per export
                continue
            for model in optimum.get(export.label, []):  # Optimum's exports of its checkpoint, on its inputs
                _run_provider(plan, export, env, result, step, model=model)
        if export.label in torch_pairs:
            _run_provider(plan, export, environments[PYTORCH], result, step, torch_pairs[export.label])
    _accuracy(plan, exports, optimum, torch_pairs, result, step)
    return result


def _optimum_models(plan: Plan, exports: list[Export], result: BenchResult, step: Progress) -> dict[str, list]:
    """Export label -> Optimum's exports of its checkpoint (made once into the cache); failures recorded."""
    if not plan.optimum:
        return {}
    from fastattn.bench.optimum import pair, parse_variants, prepare

    variants = parse_variants(",".join(plan.optimum_variants))
    found: dict[str, list] = {}
    for checkpoint in plan.optimum:
        directory, manifest = pair(checkpoint, [(e.directory, e.manifest) for e in exports])
        label = next(e.label for e in exports if e.directory == directory)
        models, failures = prepare(checkpoint, (directory, manifest), variants, step)
        result.failures += failures
        result.optimum += [{"checkpoint": str(m.checkpoint), "label": m.label, "file": str(m.file),
                            "inputs_from": label, "recipe": m.recipe, "attention": m.attention} for m in models]  # fmt: skip
        found[label] = models
    return found


def _accuracy(plan: Plan, exports: list[Export], optimum: dict[str, list], torch_pairs: dict[str, Path],
              result: BenchResult, step: Progress) -> None:  # fmt: skip
    """The accuracy column: every model of each --optimum checkpoint against PyTorch on held-out text."""
    from fastattn.bench.optimum import accuracy, read_config

    for label, models in optimum.items():
        checkpoint = models[0].checkpoint if models else torch_pairs[label]
        config = read_config(checkpoint)
        same = [(e.label, e.directory, e.manifest) for e in exports if read_config(e.directory) == config]
        step(f"accuracy of {len(same) + len(models)} models of {checkpoint.name} on held-out text")
        result.accuracy += accuracy(checkpoint, same, models, Path(checkpoint).name, plan.settings.threads)


def _run_provider(plan: Plan, export: Export, env: Environment, result: BenchResult, step: Progress,
                  checkpoint: Path | None = None, model=None) -> bool:  # fmt: skip
    """The configurations of one export on one provider (or PyTorch, or ``model``: an Optimum export of the
    same checkpoint, on this export's inputs); False if the provider is unusable."""
    settings, ran = plan.settings, 0
    label = model.label if model is not None else export.label
    for batch in plan.batches:
        for sequence in plan.sequences:
            job = Job(str(export.directory), label, env.name, batch, sequence, settings,
                      str(checkpoint) if checkpoint else None, plan.allow_pickle,
                      str(model.file) if model is not None else None, model.precision if model is not None else "fp32")  # fmt: skip
            step(f"{label} on {env.name}: batch {batch}, seq {sequence}")
            op = "torch" if checkpoint else "measure"
            reply = call(env.python, {"op": op, "job": job.to_dict()}, settings.timeout)
            if reply["ok"]:
                result.rows.append(Row.from_dict(reply["result"]))
                ran += 1
            elif reply.get("type") == "ProviderError":
                result.unavailable.append(Unavailable(env.name, reply["error"].split(". Fix: ")[0],
                                                      reply["error"].partition(". Fix: ")[2] or "see -v"))  # fmt: skip
                return False
            elif reply.get("type") == "LoadError":  # the graph does not load here: every shape would fail alike
                count = len(plan.batches) * len(plan.sequences)
                result.failures.append(_failure(export, env.name, None, reply["error"], f"{count} configurations"))
                return True
            else:
                result.failures.append(_failure(export, env.name, job, reply["error"]))
    if ran and not checkpoint and model is None:
        step(f"{export.label} on {env.name}: node placement")
        reply = call(env.python, {"op": "placement", "directory": str(export.directory), "provider": env.name},
                     settings.timeout)  # fmt: skip
        if reply["ok"]:
            result.placements += [
                PlacementRecord(export.label, env.name, p["graph"], p["requested"], p["kernels"], p["fallback"])
                for p in reply["result"]
            ]
        else:
            result.failures.append(_failure(export, env.name, None, f"node placement: {reply['error']}"))
    return True

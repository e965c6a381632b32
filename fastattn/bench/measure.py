"""Time one export on one provider at one (batch, sequence), in this process. Torch-free.

Method, per configuration:

* inputs come from the manifest (``fastattn.runtime.sample_graph``, fixed seed), so every
  provider and PyTorch eager get the same arrays;
* inputs are bound once as ``OrtValue``s on the provider's device and outputs are bound to
  the device (IOBinding): no host copies inside the timed region, and for decoders the
  ``present`` outputs are fed back as ``past`` without leaving the device;
* each phase is one block: a pause, untimed warm-up runs (at least ``warmup``, more while
  runs still get faster: see :func:`warm_up`), then timed runs until there are
  at least ``repeats`` samples *and* ``min_time`` seconds of them. Blocks are never
  interleaved with another configuration (ORT's spinning threads would bias the one after);
* intra-op threads are fixed (``SessionOptions.intra_op_num_threads``; OpenVINO EP's own
  ``num_of_threads``);
* peak memory is the rise of the process's resident-set high-water mark (Linux ``VmHWM``,
  reset through ``/proc/self/clear_refs`` just before) over the resident set just before the
  session is created, read after the last timed run: weights as the provider holds them, its
  arena, inputs and outputs. The orchestrator runs each configuration in a fresh worker
  process, so no other configuration's arena is in it (run in a process that has allocated
  and freed memory before, the figure is not per configuration: freed pages get reused);
* other processes' share of the CPU during the blocks is recorded (``others_cpu``), so a
  number taken on a busy machine says so.

Phases: a graph without a cache is timed as ``encode`` (``run`` for foreign models) at
(batch, sequence). A graph with a cache (``manifest`` cache pairs) is timed as ``prefill``
(sequence tokens onto an empty cache) and ``decode``: rounds of ``decode_steps`` single-token
steps starting from a cache of ``sequence`` tokens, each step feeding its ``present`` back as
``past``; every step is one sample (its binding included: it is part of a real decode loop).
An encoder-decoder gets ``encode`` on its encoder, then ``prefill`` and ``decode`` on its
decoder with ``encoder_sequence`` = sequence.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from fastattn.bench.plan import Job, ProviderChoice, Settings
from fastattn.bench.records import Phase, Row
from fastattn.errors import InputError, ProviderError
from fastattn.runtime.manifest import Arch, GraphEntry, Manifest
from fastattn.runtime.session import ExportedModel, GraphSession, graph_dims, sample_graph

log = logging.getLogger(__name__)

DEVICES = {"CUDAExecutionProvider": "cuda", "TensorrtExecutionProvider": "cuda"}  # IOBinding device; else cpu
THREAD_OPTIONS = {"OpenVINOExecutionProvider": "num_of_threads"}  # providers with their own thread count
MIN_CPU_SECONDS = 0.5  # shortest span (CPU time of all cores) CpuShare reports on
WARM = 1.5  # warm-up goes on while runs still change by more than this factor (see warm_up) ...
MAX_WARMUP_S = 10.0  # ... for at most this long


# ---- memory -------------------------------------------------------------------------------------


class Memory:
    """Resident-set size and its high-water mark of this process (Linux /proc; else getrusage)."""

    def reset(self) -> bool:
        """Reset the high-water mark to the current RSS (Linux >= 4.0); False if not possible."""
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return True
        except OSError:
            return False

    def _status(self, key: str) -> float | None:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        return int(line.split()[1]) / 1024  # kB -> MB
        except OSError:
            pass
        return None

    def rss_mb(self) -> float | None:
        return self._status("VmRSS")

    def peak_mb(self) -> float | None:
        peak = self._status("VmHWM")
        if peak is None:
            try:
                import resource  # noqa: PLC0415 (POSIX only)

                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
            except ImportError:
                return None
        return peak


class CpuShare:
    """The share of the machine's CPU time that *other* processes used during a span (Linux /proc/stat).

    A benchmark on a busy machine is noise; this says how busy it was while the blocks ran:
    (all busy CPU time - this process's CPU time) / all CPU time, over the span.
    """

    def __init__(self) -> None:
        self.start = self._read()

    @staticmethod
    def _read() -> tuple[int, int, float] | None:
        try:
            with open("/proc/stat") as f:
                ticks = [int(v) for v in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
        except (OSError, ValueError):
            return None
        t = os.times()
        return sum(ticks), ticks[3] + ticks[4], t.user + t.system

    def others(self) -> float | None:
        end = self._read()
        if self.start is None or end is None:
            return None
        hz = os.sysconf("SC_CLK_TCK")
        total = (end[0] - self.start[0]) / hz
        if total < MIN_CPU_SECONDS:  # clock ticks are 10 ms: too short a span says nothing
            return None
        busy = total - (end[1] - self.start[1]) / hz
        return round(min(1.0, max(0.0, (busy - (end[2] - self.start[2])) / total)), 3)


# ---- what to run --------------------------------------------------------------------------------


def sizes_for(entry: GraphEntry, batch: int, sequence: int, past: int = 0) -> dict[str, int]:
    """Dim sizes of a graph at (batch, sequence) on a cache of ``past`` tokens.

    ``encoder_sequence`` takes the sequence length; a dim of a foreign model is the batch when
    its name contains "batch", else the sequence length.
    """
    known = {"batch": batch, "sequence": sequence, "past_sequence": past, "encoder_sequence": sequence}
    return {d: known.get(d, batch if "batch" in d else sequence) for d in graph_dims(entry)}


@dataclass(frozen=True)
class PhaseSpec:
    name: str  # encode | run | prefill | decode
    graph: GraphEntry


def phase_plan(manifest: Manifest, decode_steps: int) -> list[PhaseSpec]:
    """The timed phases of an export (see the module doc)."""
    first = manifest.graphs[0]
    cached = next((g for g in manifest.graphs if g.cache), None)
    phases = []
    if not first.cache:
        phases.append(PhaseSpec("encode" if manifest.arch in (Arch.ENCODER, Arch.ENCODER_DECODER) else "run", first))
    if cached is not None:
        phases.append(PhaseSpec("prefill", cached))
        if decode_steps:
            phases.append(PhaseSpec("decode", cached))
    return phases


def check_length(manifest: Manifest, label: str, sequence: int, decode_steps: int) -> None:
    """An InputError when ``sequence`` (plus decode steps for a cached graph) exceeds the positions."""
    limit = manifest.max_length
    if limit is None:
        return
    steps = decode_steps if any(g.cache for g in manifest.graphs) else 0
    if sequence + steps > limit:
        extra = f" + {steps} decode steps" if steps else ""
        fix = f"pass sequence lengths up to {limit - steps}" + (" or fewer --decode-steps" if steps else "")
        raise InputError(
            f"sequence length {sequence}{extra} is longer than {label} takes "
            f"({limit} positions, max_length in its fastattn.json)",
            fix,
        )


def attention_label(manifest: Manifest) -> str:
    """The attention kinds of a model in order of appearance: ``sliding:64+causal``."""
    kinds: dict[str, None] = {}
    for a in manifest.attention:
        name = str(a.kind) + "".join(f":{n}" for n in (a.global_tokens, a.window, a.block) if n)
        kinds.setdefault(name)
    return "+".join(kinds) or "none"


def model_name(manifest: Manifest) -> str:
    return (manifest.config or {}).get("name") or manifest.source.split(" ")[0]


# ---- timing -------------------------------------------------------------------------------------

Round = Callable[[list[float] | None], None]  # runs one round; appends one sample per timed call


def warm_up(round_: Round, settings: Settings, per_round: int = 1) -> int:
    """Untimed rounds; the number run. None when ``warmup`` is 0; else at least ``warmup`` runs and
    two rounds, then on (for at most ``MAX_WARMUP_S``) while the runs still settle: the last round
    was over ``WARM`` x faster than the one before it, or over ``WARM`` x slower than the fastest.

    PyTorch eager needs a few calls at a new shape (here the first took ~1.4 s, the next two
    still 50-200 ms, then 0.3 ms); a fixed count alone can stop in the middle of that.
    """
    if settings.warmup == 0:
        return 0
    need = max(math.ceil(settings.warmup / per_round), 2)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < need or (_settling(times) and time.perf_counter() - start < MAX_WARMUP_S):
        t = time.perf_counter()
        round_(None)
        times.append(time.perf_counter() - t)
    return len(times)


def _settling(times: list[float]) -> bool:
    return times[-1] * WARM < times[-2] or times[-1] > WARM * min(times)


def time_rounds(round_: Round, settings: Settings, per_round: int = 1) -> tuple[list[float], int]:
    """A block: pause, warm-up, then rounds until ``repeats`` samples and ``min_time`` seconds.

    Returns the samples (ms) and the number of warm-up runs."""
    time.sleep(settings.pause)
    warm = warm_up(round_, settings, per_round) * per_round
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < settings.max_repeats and (
        len(samples) < settings.repeats or time.perf_counter() - start < settings.min_time
    ):
        round_(samples)
    return samples, warm


def timed(fn: Callable[[], object]) -> Round:
    """A round of one timed call of ``fn``."""

    def round_(samples: list[float] | None) -> None:
        start = time.perf_counter()
        fn()
        if samples is not None:
            samples.append((time.perf_counter() - start) * 1e3)

    return round_


def step_inputs(entry: GraphEntry, batch: int, sequence: int, steps: int, seed: int) -> list[dict[str, np.ndarray]]:
    """The non-cache inputs of each decode step, the cache starting at ``sequence`` tokens."""
    cache = {p.past for p in entry.cache}
    out = []
    for k in range(steps):
        feeds = sample_graph(entry, sizes_for(entry, batch, 1, past=sequence + k), seed + 1 + k)
        out.append({n: v for n, v in feeds.items() if n not in cache})
    return out


# ---- ONNX Runtime -------------------------------------------------------------------------------


def provider_request(choice: ProviderChoice, threads: int) -> list:
    """The provider list for the runtime, with the provider's own thread option where it has one."""
    option = THREAD_OPTIONS.get(choice.ort_name)
    return [(choice.name, {option: str(threads)}) if option else choice.name]


class _Bound:
    """One graph's session driven through IOBinding on the provider's device."""

    def __init__(self, session: GraphSession, device: str):
        self.session, self.sess, self.device = session, session.session, device
        self.outputs = [o.name for o in self.sess.get_outputs()]

    def values(self, arrays: dict[str, np.ndarray]) -> dict[str, ort.OrtValue]:
        return {n: ort.OrtValue.ortvalue_from_numpy(a, self.device, 0) for n, a in arrays.items()}

    def run(self, inputs: dict[str, ort.OrtValue]) -> dict[str, ort.OrtValue]:
        binding = self.sess.io_binding()
        for name, value in inputs.items():
            binding.bind_ortvalue_input(name, value)
        for name in self.outputs:
            binding.bind_output(name, self.device)
        self.sess.run_with_iobinding(binding)
        return dict(zip(self.outputs, binding.get_outputs(), strict=True))

    def fixed(self, inputs: dict[str, ort.OrtValue]) -> Callable[[], None]:
        """A call with inputs bound once (outputs allocated on the device per run)."""
        binding = self.sess.io_binding()
        for name, value in inputs.items():
            binding.bind_ortvalue_input(name, value)
        for name in self.outputs:
            binding.bind_output(name, self.device)
        return lambda: self.sess.run_with_iobinding(binding)


def decode_round(run: Callable[[dict], dict], cache: Mapping[str, str], start: dict, steps: list[dict]) -> Round:
    """One round of decode steps: ``run`` each step's inputs with the cache so far, then feed each
    present (``cache``: past name -> present name) back as its past; one sample per step."""

    def round_(samples: list[float] | None) -> None:
        past = start
        for inputs in steps:
            t = time.perf_counter()
            out = run({**inputs, **past})
            past = {p: out[q] for p, q in cache.items()}
            if samples is not None:
                samples.append((time.perf_counter() - t) * 1e3)

    return round_


def measure(job: Job) -> Row:
    """Measure one configuration with ONNX Runtime in this process (see the module doc)."""
    settings, choice = job.settings, ProviderChoice.parse(job.provider)
    manifest = Manifest.load(job.directory)
    check_length(manifest, job.label, job.sequence, settings.decode_steps)
    phases = phase_plan(manifest, settings.decode_steps)
    memory = Memory()
    memory.reset()
    baseline = memory.rss_mb()
    model = ExportedModel.load(job.directory, provider_request(choice, settings.threads), settings.threads)
    device = DEVICES.get(choice.ort_name, "cpu")
    bound: dict[str, _Bound] = {}
    for spec in phases:
        if spec.graph.name not in bound:
            session = model.graph(spec.graph.name)
            if session.fell_back:
                raise ProviderError(
                    f"{choice.ort_name} could not run graph {spec.graph.name!r} of {job.label}: ONNX Runtime "
                    f"fell back to {', '.join(session.providers)}",
                    "check the provider's device and drivers (see the log with -v)",
                )
            bound[spec.graph.name] = _Bound(session, device)
    results, starts, share = [], {}, CpuShare()
    for spec in phases:
        b, entry = bound[spec.graph.name], spec.graph
        if spec.name == "decode":
            steps = step_inputs(entry, job.batch, job.sequence, settings.decode_steps, settings.seed)
            round_ = decode_round(b.run, {p.past: p.present for p in entry.cache}, starts[entry.name],
                                  [b.values(s) for s in steps])  # fmt: skip
            sizes = sizes_for(entry, job.batch, 1, past=job.sequence)
            samples, warm = time_rounds(round_, settings, len(steps))
        else:
            sizes = sizes_for(entry, job.batch, job.sequence)
            inputs = b.values(b.session.check(sample_graph(entry, sizes, settings.seed)))
            samples, warm = time_rounds(timed(b.fixed(inputs)), settings)
            if entry.cache:
                out = b.run(inputs)
                starts[entry.name] = {p.past: out[p.present] for p in entry.cache}
        results.append(Phase(spec.name, entry.name, sizes, samples, warm))
    peak = memory.peak_mb()
    session_providers = next(iter(bound.values())).session.providers
    return Row(
        model=model_name(manifest), export=job.label, directory=str(Path(job.directory)), target=manifest.target,
        attention=attention_label(manifest), precision=manifest.precision, provider=choice.name,
        engine=f"onnxruntime {ort.__version__}", batch=job.batch, sequence=job.sequence, phases=results,
        peak_memory_mb=None if peak is None or baseline is None else round(peak - baseline, 1),
        session_providers=session_providers, threads=settings.threads, iobinding=True, others_cpu=share.others(),
    )  # fmt: skip

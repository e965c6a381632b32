"""Time one of Optimum's exports of a checkpoint exactly as :mod:`fastattn.bench.measure` times fastattn's. Torch-free.

The job names the Optimum model file (``Job.optimum``) and, in ``Job.directory``, the fastattn export
of the same checkpoint: its manifest gives the phases and the sample arrays (same seed), so both
engines get the same token ids and masks. What Optimum's graph takes beyond them is derived the
way Optimum's own ``ORTModel`` classes derive it: ``token_type_ids`` zeros, ``position_ids``
``cumsum(mask) - 1`` over the new tokens (1 at padding, as ``generate`` passes them), empty
``past_key_values.*`` of its own shape for a prefill. Decode steps feed each ``present.*`` back as
its ``past_key_values.*``. Blocks, warm-up, IOBinding, threads and memory are those of ``measure``;
the session is plain ONNX Runtime with Optimum's defaults (no fastattn session settings).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnxruntime as ort

from fastattn.bench.measure import (
    DEVICES,
    THREAD_OPTIONS,
    CpuShare,
    Memory,
    _Bound,
    check_length,
    decode_round,
    model_name,
    phase_plan,
    sizes_for,
    step_inputs,
    time_rounds,
    timed,
)
from fastattn.bench.plan import Job, ProviderChoice
from fastattn.bench.records import Phase, Row
from fastattn.errors import InputError, LoadError, ProviderError
from fastattn.runtime.manifest import Manifest
from fastattn.runtime.session import sample_graph

PAST, PRESENT = "past_key_values.", "present."
_NUMPY = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
          "tensor(int32)": np.int32, "tensor(bool)": np.bool_}  # fmt: skip


def positions(mask: np.ndarray, new: int) -> np.ndarray:
    """Position ids of the last ``new`` tokens, as Optimum and ``generate`` compute them for padded rows."""
    pos = mask.astype(np.int64).cumsum(-1) - 1
    pos[mask == 0] = 1
    return np.ascontiguousarray(pos[:, mask.shape[1] - new :])


def optimum_feeds(inputs: list[ort.NodeArg], arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The feeds of an Optimum graph from fastattn's sample arrays (see the module doc)."""
    ids = arrays["input_ids"]
    feeds: dict[str, np.ndarray] = {}
    for arg in inputs:
        if arg.name in arrays and not (arg.name.startswith(PAST) and arrays[arg.name].shape[2] == 0):
            feeds[arg.name] = arrays[arg.name]
        elif arg.name == "token_type_ids":
            feeds[arg.name] = np.zeros_like(ids)
        elif arg.name == "position_ids":
            feeds[arg.name] = positions(arrays["attention_mask"], ids.shape[1])
        elif arg.name.startswith(PAST):  # an empty cache of the graph's own (batch, heads, 0, head_size)
            shape = [ids.shape[0], *(d if isinstance(d, int) else 0 for d in arg.shape[1:])]
            feeds[arg.name] = np.zeros(shape, _NUMPY.get(arg.type, np.float32))
        else:
            raise InputError(f"Optimum's graph takes {arg.name!r}, which fastattn bench cannot make",
                             "bench encoders and decoders with --optimum")  # fmt: skip
    return feeds


class _Plain:
    """What :class:`~fastattn.bench.measure._Bound` reads of a session: the ORT session itself."""

    def __init__(self, session: ort.InferenceSession):
        self.session = session


def _session(job: Job, choice: ProviderChoice) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = job.settings.threads
    option = THREAD_OPTIONS.get(choice.ort_name)
    entry = (choice.ort_name, {option: str(job.settings.threads)}) if option else choice.ort_name
    providers = [entry] + (["CPUExecutionProvider"] if choice.ort_name != "CPUExecutionProvider" else [])
    try:
        session = ort.InferenceSession(str(job.optimum), options, providers=providers)
    except Exception as e:  # noqa: BLE001 - ORT's load errors have many types
        raise LoadError(f"ONNX Runtime cannot load {job.optimum}: {str(e).splitlines()[0]}",
                        "delete the Optimum cache entry and run again") from e  # fmt: skip
    if session.get_providers()[0] != choice.ort_name:
        raise ProviderError(f"{choice.ort_name} could not run {job.label}: ONNX Runtime fell back to "
                            f"{', '.join(session.get_providers())}", "check the provider's device and drivers")  # fmt: skip
    return session


def measure_optimum(job: Job) -> Row:
    """Measure the Optimum model ``job.optimum`` on the inputs of the fastattn export in ``job.directory``."""
    if not job.optimum:
        raise InputError("no Optimum model given", "pass --optimum CHECKPOINT_DIR")
    settings, choice = job.settings, ProviderChoice.parse(job.provider)
    manifest = Manifest.load(job.directory)
    check_length(manifest, job.label, job.sequence, settings.decode_steps)
    phases = phase_plan(manifest, settings.decode_steps)
    memory = Memory()
    memory.reset()
    baseline = memory.rss_mb()
    session = _session(job, choice)
    bound = _Bound(_Plain(session), DEVICES.get(choice.ort_name, "cpu"))  # type: ignore[arg-type]
    inputs = session.get_inputs()
    cache = {PAST + o.name.removeprefix(PRESENT): o.name for o in session.get_outputs() if o.name.startswith(PRESENT)}
    results, start, share = [], None, CpuShare()
    for spec in phases:
        entry = spec.graph
        if spec.name == "decode":
            steps = step_inputs(entry, job.batch, job.sequence, settings.decode_steps, settings.seed)
            plain = [bound.values({k: v for k, v in optimum_feeds(inputs, s).items() if not k.startswith(PAST)})
                     for s in steps]  # fmt: skip
            samples, warm = time_rounds(decode_round(bound.run, cache, start, plain), settings, len(plain))
            sizes = sizes_for(entry, job.batch, 1, past=job.sequence)
        else:
            sizes = sizes_for(entry, job.batch, job.sequence)
            values = bound.values(optimum_feeds(inputs, sample_graph(entry, sizes, settings.seed)))
            samples, warm = time_rounds(timed(bound.fixed(values)), settings)
            if cache:
                out = bound.run(values)
                start = {p: out[q] for p, q in cache.items()}
        results.append(Phase(spec.name, entry.name, sizes, samples, warm))
    peak = memory.peak_mb()
    return Row(
        model=model_name(manifest), export=job.label, directory=str(Path(job.optimum).parent), target="optimum",
        attention="optimum", precision=job.optimum_precision,
        provider=choice.name, engine=f"onnxruntime {ort.__version__}", batch=job.batch, sequence=job.sequence,
        phases=results, peak_memory_mb=None if peak is None or baseline is None else round(peak - baseline, 1),
        session_providers=session.get_providers(), threads=settings.threads, iobinding=True,
        others_cpu=share.others(),
    )  # fmt: skip

"""Time candidate ONNX models on one provider, each checked against a reference model on the same inputs.

The timing half of lowering measurement (:mod:`fastattn.exporter.lowering.measure` builds
the candidate models). It needs only onnxruntime and NumPy, so it also runs as a worker in
a provider's own environment (OpenVINO EP ships its own onnxruntime)::

    python -m fastattn.runtime.timing JOB_DIR

``JOB_DIR/job.json`` names the provider, threads, repeats, the reference and candidate
model files and the cases (one ``.npz`` of feeds each); the worker prints one JSON line: a
list of :class:`Timing`, or ``{"error": ...}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from fastattn.runtime.providers import resolve

log = logging.getLogger(__name__)

ROUNDS = 3
TOLERANCE = 1e-4  # max abs error per max(|reference|, 1)


@dataclass
class Timing:
    rule: str
    case: str
    ms: float | None  # None: rejected
    max_abs_error: float | None = None
    reason: str = ""
    spread: float = 0.0  # ms: half the range of the per-round medians (how much the figure moves)


def time_models(
    models: Mapping[str, bytes],
    reference: str,
    cases: Sequence[tuple[str, dict[str, np.ndarray]]],
    provider: str,
    repeats: int = 10,
    threads: int | None = None,
    timed: Sequence[str] | None = None,
) -> list[Timing]:
    """Median ms of the ``timed`` models (default all) at every case; those that differ from
    ``reference`` are rejected."""
    options = ort.SessionOptions()
    options.log_severity_level = 4  # a candidate that fails is recorded as rejected, not printed
    if threads:
        options.intra_op_num_threads = threads
    providers = resolve([provider])
    sessions, results = {}, []
    names = list(models) if timed is None else list(timed)
    for name, model in models.items():
        if name != reference and name not in names:
            continue
        try:
            sessions[name] = ort.InferenceSession(model, options, providers=providers)
        except Exception as e:  # a provider may refuse a model it cannot compile
            if name == reference:
                raise
            results += [Timing(name, case, None, reason=f"failed to load: {e}"[:200]) for case, _ in cases]
    for case, feeds in cases:
        want = sessions[reference].run(None, feeds)
        passed = {}
        for name in names:
            session = sessions.get(name)
            if session is None:  # failed to load
                continue
            try:
                got = session.run(None, feeds)
            except Exception as e:  # an EP may reject shapes or types at run time
                results.append(Timing(name, case, None, reason=f"failed to run: {e}"[:200]))
                continue
            error = max(float(np.abs(a - b).max()) for a, b in zip(got, want) if a.size)
            scale = max(float(np.abs(b).max()) for b in want if b.size)
            if not error <= TOLERANCE * max(scale, 1.0):
                results.append(Timing(name, case, None, error, f"differs from the function body by {error:.2e}"))
                continue
            passed[name] = error
        log.info("timing %s at %s on %s", ", ".join(passed), case, provider)
        medians = interleaved_medians({name: sessions[name] for name in passed}, feeds, repeats)
        results += [Timing(name, case, medians[name][0], error, spread=medians[name][1])
                    for name, error in passed.items()]  # fmt: skip
    return results


def interleaved_medians(sessions: Mapping[str, ort.InferenceSession], feeds: dict,
                        repeats: int) -> dict[str, tuple[float, float]]:  # fmt: skip
    """(median, spread) ms per session over ``ROUNDS`` rounds of ``repeats`` runs, sessions taking
    turns; the spread is half the range of the round medians.

    Rounds alternate the order, and a short pause before each session's runs lets the previous
    session's spinning threads go idle, so no candidate is timed against another's threads.
    """
    per_round: dict[str, list[float]] = {name: [] for name in sessions}
    order = list(sessions)
    for r in range(ROUNDS):
        for name in order if r % 2 == 0 else reversed(order):
            time.sleep(0.02)
            per_round[name].append(_median_ms(sessions[name], feeds, repeats))
    return {name: (statistics.median(v), (max(v) - min(v)) / 2) for name, v in per_round.items()}


def _median_ms(session: ort.InferenceSession, feeds: dict[str, np.ndarray], repeats: int) -> float:
    for _ in range(2):
        session.run(None, feeds)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, feeds)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def write_job(directory: Path, models: Mapping[str, bytes], reference: str,
              cases: Sequence[tuple[str, dict[str, np.ndarray]]], provider: str, repeats: int,
              threads: int | None, timed: Sequence[str]) -> None:  # fmt: skip
    """The files :func:`main` reads: one ``.onnx`` per model, one ``.npz`` per case, ``job.json``."""
    files = {}
    for i, (name, model) in enumerate(models.items()):
        files[name] = f"model{i}.onnx"
        (directory / files[name]).write_bytes(model)
    for i, (_, feeds) in enumerate(cases):
        np.savez(directory / f"case{i}.npz", **feeds)  # type: ignore[arg-type]
    job = {"provider": provider, "repeats": repeats, "threads": threads, "reference": reference, "models": files,
           "timed": list(timed),
           "cases": [{"name": name, "feeds": f"case{i}.npz"} for i, (name, _) in enumerate(cases)]}  # fmt: skip
    (directory / "job.json").write_text(json.dumps(job))


def read_result(stdout: str) -> list[Timing]:
    """The worker's answer; raises RuntimeError with its message when it refused."""
    data = json.loads(stdout.strip().splitlines()[-1])
    if isinstance(data, dict):
        raise RuntimeError(data.get("error", "no result"))
    return [Timing(**t) for t in data]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="time candidate models against a reference on one provider")
    parser.add_argument("job", type=Path)
    args = parser.parse_args(argv)
    try:
        job = json.loads((args.job / "job.json").read_text())
        models = {name: (args.job / file).read_bytes() for name, file in job["models"].items()}
        cases = []
        for case in job["cases"]:
            with np.load(args.job / case["feeds"]) as arrays:
                cases.append((case["name"], {k: arrays[k] for k in arrays.files}))
        timings = time_models(models, job["reference"], cases, job["provider"], job["repeats"], job["threads"],
                              job["timed"])  # fmt: skip
    except Exception as e:  # report, don't crash: the exporter reads one JSON line
        print(json.dumps({"error": f"{type(e).__name__}: {e}"[:500]}))
        return 1
    print(json.dumps([asdict(t) for t in timings]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

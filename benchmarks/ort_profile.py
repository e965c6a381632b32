"""Where an ONNX model's time goes on ONNX Runtime's CPU EP: per op type, from ORT's own profiler.

For each model: the session's optimized graph (``optimized_model_filepath``) gives node counts per
op type after ORT's fusions; ``SessionOptions.enable_profiling`` over ``--runs`` calls gives the
time per op type (sum of kernel times, per call) and its share of the model's kernel time.
Inputs: ``input_ids`` (random ids < 1000), ``attention_mask`` ones, ``token_type_ids`` zeros, as
the graph asks. A fastattn export is named by its directory (its manifest's disabled optimizers
are applied, as the runtime does); anything else is an .onnx file run with ORT's defaults.

    python -m benchmarks.ort_profile LABEL=PATH [LABEL=PATH ...] [--batch 1] [--sequence 128]

Prints one markdown table per model; nothing is written to benchmarks/results (a profile is a
diagnosis, not a measurement: the profiler's overhead and this machine's load both show in it).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort


def model_file(path: Path) -> tuple[Path, list[str]]:
    """The .onnx file and the ORT optimizers to disable (a fastattn export's manifest says which)."""
    if path.is_dir():
        manifest = json.loads((path / "fastattn.json").read_text())
        return path / manifest["graphs"][0]["file"], list(manifest.get("session", {}).get("disabled_optimizers") or [])
    return path, []


def feeds(session: ort.InferenceSession, batch: int, sequence: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out = {}
    for arg in session.get_inputs():
        if arg.name == "input_ids":
            out[arg.name] = rng.integers(100, 1000, (batch, sequence), dtype=np.int64)
        elif arg.name == "attention_mask":
            out[arg.name] = np.ones((batch, sequence), np.int64)
        elif arg.name == "token_type_ids":
            out[arg.name] = np.zeros((batch, sequence), np.int64)
        else:
            raise SystemExit(f"{arg.name}: this profiler feeds encoders only")
    return out


def profile(path: Path, batch: int, sequence: int, runs: int, threads: int) -> dict:
    file, disabled = model_file(path)
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3  # the NchwcTransformer warning on saving the optimized graph
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "profile")
        session = ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"],
                                       disabled_optimizers=disabled or None)  # fmt: skip
        inputs = feeds(session, batch, sequence)
        for _ in range(3):
            session.run(None, inputs)
        events = json.loads(Path(session.end_profiling()).read_text())
        # the warm-up runs are in the first profile; profile the timed runs in a fresh one
        session = ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"],
                                       disabled_optimizers=disabled or None)  # fmt: skip
        session.run(None, inputs)
        for _ in range(runs):
            session.run(None, inputs)
        events = json.loads(Path(session.end_profiling()).read_text())
        optimized = onnx.load(str(Path(tmp) / "optimized.onnx"), load_external_data=False)
    counts = Counter(f"{n.op_type}" for n in optimized.graph.node)
    per_op: dict[str, float] = defaultdict(float)
    model_us = []
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] += e["dur"]
        elif e.get("cat") == "Session" and e["name"] == "model_run":
            model_us.append(e["dur"])
    calls = runs + 1
    total = sum(per_op.values())
    rows = sorted(((op, us / calls / 1e3, us / total, counts.get(op, 0)) for op, us in per_op.items()),
                  key=lambda r: -r[1])  # fmt: skip
    return {"rows": rows, "kernel_ms": total / calls / 1e3, "run_ms": float(np.median(model_us)) / 1e3,
            "nodes": sum(counts.values()), "disabled": disabled}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="LABEL=PATH (a fastattn export directory or an .onnx file)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--sequence", type=int, default=128)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    for item in args.models:
        label, _, path = item.partition("=")
        found = profile(Path(path), args.batch, args.sequence, args.runs, args.threads)
        print(f"\n## {label}: B={args.batch} S={args.sequence}, run {found['run_ms']:.2f} ms (median), kernels "
              f"{found['kernel_ms']:.2f} ms/call, {found['nodes']} nodes after ORT's optimizers"
              f"{'; disabled ' + ','.join(found['disabled']) if found['disabled'] else ''}")  # fmt: skip
        print("\n| op type | nodes | ms/call | share |\n|---|---|---|---|")
        for op, ms, share, n in found["rows"]:
            print(f"| {op} | {n} | {ms:.3f} | {share:.1%} |")


if __name__ == "__main__":
    main()

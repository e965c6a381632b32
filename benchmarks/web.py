"""Edge targets: onnxruntime-web's WebAssembly EP (in Node) beside the CPU EP, and ORT-format packages.

Two models made with fastattn: the demo decoder (preset ``default``) and the 6-layer d=384 encoder of
``benchmarks/encoder_vs_eager.py``; fp32 and int8 (the decoder also int4), exported for the CPU EP
with ``--package ort``, and fp32 / int8 lowered for ``-t wasm`` (candidates timed on onnxruntime-web).
Every export runs through ``fastattn bench -p cpu -p wasm -p webgpu`` at batch 1, S = 128 (decoders:
prefill and 16-token decode rounds), 2 threads; the wasm rows again at 1 thread. Recorded: latency,
the ops each export holds (all of which ran on wasm when its wasm row exists), sizes of the .onnx and
the .ort, the minimal-build operator count, and the per-layer lowering timings taken on wasm.

    make web-env && python -m benchmarks.web          # -> benchmarks/results/web.{json,md}
    python -m benchmarks.web --smoke --out DIR        # a tiny decoder, two exports (benchmarks/record.py)
"""

from __future__ import annotations

import argparse
import collections
import json
import platform
import sys
from pathlib import Path

import onnx

from benchmarks.encoder_vs_eager import CONFIG as ENCODER
from benchmarks.record import add_options, command, out_dir, work_dir
from fastattn.bench import Plan, Settings, bench
from fastattn.bench.machine import describe, versions
from fastattn.exporter.lowering.measure import ShapeCase
from fastattn.exporter.pipeline import ExportOptions, export
from fastattn.models import LayerAttention, build, preset, save
from fastattn.quantize import Mode, QuantOptions
from fastattn.quantize.gates import Gate
from fastattn.quantize.step import QuantizeStep
from fastattn.runtime import schema
from fastattn.runtime.manifest import Manifest
from fastattn.runtime.web.node import runtime
from fastattn.targets import Target

MODELS = {"decoder": preset("default"), "encoder": ENCODER}
LENIENT = Gate(max_ppl_increase=1.0, min_cosine=0.0, max_accuracy_drop=1.0)  # random weights: no task to gate
EXPORTS = [  # (model, precision, target, ORT package)
    ("decoder", "fp32", Target.CPU, True), ("decoder", "int8", Target.CPU, True), ("decoder", "int4", Target.CPU, True),
    ("decoder", "fp32", Target.WASM, False), ("decoder", "int8", Target.WASM, False),
    ("encoder", "fp32", Target.CPU, True), ("encoder", "int8", Target.CPU, True), ("encoder", "fp32", Target.WASM, False),
]  # fmt: skip
MODES = {"int8": Mode.INT8, "int4": Mode.INT4}
# The smoke run: one tiny decoder, one export that takes every step (int8, ORT package, -t wasm).
SMOKE_MODELS = {"decoder": preset("default").replace(name="default-smoke", vocab_size=64, d_model=32, num_heads=4,
                                                     kv_heads=2, ffn_dim=64, decoder_layers=(LayerAttention(),))}  # fmt: skip
SMOKE_EXPORTS = [("decoder", "int8", Target.WASM, True)]  # quantized, packaged, lowered on wasm: one export
SMOKE_MEASURE = {"repeats": 1, "profile": (ShapeCase("prefill", 1, 16), ShapeCase("decode", 1, 1, past=16))}


def make_exports(workdir: Path, smoke: bool = False) -> list[Path]:
    models, measure = (SMOKE_MODELS, SMOKE_MEASURE) if smoke else (MODELS, {})
    outs = []
    for model, precision, target, ort in SMOKE_EXPORTS if smoke else EXPORTS:
        ckpt = workdir / f"{model}.pt"
        if not ckpt.exists():
            save(build(models[model], seed=0), ckpt)
        out = workdir / f"{model}-{precision}-{target.value}"
        if not (out / "fastattn.json").exists():
            quantize = QuantizeStep(QuantOptions(MODES[precision]), gate=LENIENT) if precision in MODES else None
            print(f"exporting {out.name}", file=sys.stderr)
            export(ckpt, ExportOptions(out, target=target, quantize=quantize, package_ort=ort, force=True, **measure))
        outs.append(out)
    return outs


def ops_of(out: Path) -> list[str]:
    counts = collections.Counter()
    for entry in Manifest.load(out).graphs:
        model = onnx.load(str(out / entry.file), load_external_data=False)
        counts.update(f"{n.domain or 'ai.onnx'}::{n.op_type}" for n in model.graph.node)
    return sorted(counts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_options(parser)
    parser.add_argument("--workdir", type=Path, default=None, help="checkpoints and exports [build/bench-web]")
    args = parser.parse_args(argv)
    out = out_dir(args)
    workdir = args.workdir or work_dir(args, out, "bench-web")
    workdir.mkdir(parents=True, exist_ok=True)
    outs = make_exports(workdir, args.smoke)
    timing = {"warmup": 1, "repeats": 2, "min_time": 0.0, "decode_steps": 2} if args.smoke else {
        "warmup": 5, "repeats": 20, "min_time": 1.0, "decode_steps": 16}  # fmt: skip
    sequence = 16 if args.smoke else 128
    result = bench(Plan.create(outs, ["cpu", "wasm", "webgpu"], sequences=[sequence], settings=Settings(threads=2, **timing)),
                   progress=lambda m: print(m, file=sys.stderr))  # fmt: skip
    one = bench(Plan.create(outs, ["wasm"], sequences=[sequence], settings=Settings(threads=1, **timing)))
    rows = [r.to_dict() for r in result.rows] + [{**r.to_dict(), "provider": "wasm (1 thread)"} for r in one.rows]
    exports = {}
    for directory in outs:
        manifest = Manifest.load(directory)
        exports[directory.name] = {
            "target": manifest.target, "precision": manifest.precision, "ops": ops_of(directory),
            "onnx_bytes": sum(p.stat().st_size for p in directory.glob("*.onnx*")),
            "ort_format": schema.dump(manifest.ort_format),
            "lowering": [{"layer": a.layer, "kind": a.kind, "kernel": a.lowering, "timings": a.timings,
                          "rejected": a.rejected} for a in manifest.attention],
        }  # fmt: skip
    web = runtime().call({"op": "probe"})["result"]
    record = {
        "command": command("web", *(["--smoke"] if args.smoke else []), setup="make web-env"), "machine": describe(2),
        "versions": versions(), "onnxruntime_web": web["onnxruntime_web"], "node": web["node"],
        "python": platform.python_version(), "sequence": sequence, "decode_steps": timing["decode_steps"], "rows": rows,
        "unavailable": [u.__dict__ for u in result.unavailable], "failures": result.failures + one.failures,
        "exports": exports,
    }  # fmt: skip
    (out / "web.json").write_text(json.dumps(record, indent=1) + "\n")
    (out / "web.md").write_text(render(record))
    print(render(record))
    return 1 if record["failures"] else 0


def render(record: dict) -> str:
    from benchmarks.web_report import render as render_md

    return render_md(record)


if __name__ == "__main__":
    sys.exit(main())

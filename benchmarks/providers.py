"""Latency per execution provider: CPU EP vs OpenVINO EP vs PyTorch eager, in one run.

Two models, made with fastattn: the built-in demo model (preset ``default``: a 4-layer GQA
decoder, 3 sliding-window layers per full one) and the 6-layer d=384 encoder of
``benchmarks/encoder_vs_eager.py``. Each is exported for each provider's target (an export
lowered for the CPU EP uses contrib ops that OpenVINO EP cannot read; ``--match-target``
pairs them), fp32, and with ``--int8`` also int8 (as ``fastattn export --quantize int8``; int8-static,
OpenVINO's format, for OpenVINO); ``--export DIR`` adds any ready export (e.g. ones made by hand).
Batch 1 and 8, S = 128 and 512, PyTorch eager on the same weights in the same run.

    make openvino-env && python -m benchmarks.providers --int8   # -> benchmarks/results/providers.{json,png,md}
    python -m benchmarks.providers                    # fp32 exports only
    python -m benchmarks.providers --smoke --out DIR  # a tiny decoder and shapes (benchmarks/record.py)

OpenVINO EP lives in its own environment: ``make openvino-env`` first (else its rows are one
"not available" line). Run it on a quiet machine: it takes a few minutes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.encoder_vs_eager import CONFIG as ENCODER
from benchmarks.record import add_options, command, out_dir, work_dir
from fastattn.bench import Plan, Settings, bench
from fastattn.bench.plan import default_threads
from fastattn.bench.plot import plot
from fastattn.bench.table import about, markdown
from fastattn.errors import FastAttnError
from fastattn.exporter.lowering.measure import ShapeCase
from fastattn.exporter.pipeline import ExportOptions, export
from fastattn.models import LayerAttention, build, preset, save
from fastattn.quantize import Mode, QuantOptions
from fastattn.quantize.step import QuantizeStep
from fastattn.runtime.manifest import Manifest
from fastattn.targets import Target

MODELS = {"default": preset("default"), "encoder-6x384": ENCODER}
# One model in the smoke run: the encoder takes the same code path, and every export costs seconds.
SMOKE_MODELS = {
    "default": preset("default").replace(name="default-smoke", vocab_size=64, d_model=32, num_heads=4, kv_heads=2,
                                         ffn_dim=64, decoder_layers=(LayerAttention.parse("sliding:8"),)),
}  # fmt: skip
SMOKE_PROFILE = (ShapeCase("prefill", 1, 32), ShapeCase("decode", 1, 1, past=32))
# int8 in the format each provider runs fast (DESIGN.md: dynamic int8 is slow on OpenVINO EP, static QDQ is its format)
INT8 = {Target.CPU: "int8", Target.OPENVINO: "int8-static", Target.CUDA: "int8"}


def checkpoint(name: str, config, workdir: Path) -> Path:
    path = workdir / f"{name}.pt"
    if not path.exists():
        save(build(config, seed=0), path)
    return path


def is_current(directory: Path, config, target: Target, precision: str) -> bool:
    """An export made earlier from the same config for the same target and precision."""
    try:
        manifest = Manifest.load(directory)
    except Exception:  # noqa: BLE001 - missing or stale: make it again
        return False
    return manifest.config == config.to_dict() and manifest.target == target.value and manifest.precision == precision


def export_fp32(ckpt: Path, config, target: Target, out: Path, threads: int, smoke: bool, fresh: bool) -> Path:
    if fresh or not is_current(out, config, target, "fp32"):
        print(f"exporting {out.name}", flush=True)
        export(ckpt, ExportOptions(out, target=target, threads=threads, force=True,
                                   profile=SMOKE_PROFILE if smoke else (), repeats=1 if smoke else 10))  # fmt: skip
    return out


def export_int8(ckpt: Path, config, target: Target, out: Path, threads: int, smoke: bool,
                fresh: bool) -> tuple[Path | None, str]:  # fmt: skip
    """An int8 export (``--quantize`` as in ``INT8``, gated on random samples); (None, why) when it cannot be made."""
    if not fresh and is_current(out, config, target, "int8"):
        return out, ""
    print(f"exporting {out.name} ({INT8[target]})", flush=True)
    step = QuantizeStep(QuantOptions(Mode(INT8[target]), target=target))
    try:
        export(ckpt, ExportOptions(out, target=target, threads=threads, force=True, quantize=step,
                                   profile=SMOKE_PROFILE if smoke else (), repeats=1 if smoke else 10))  # fmt: skip
    except FastAttnError as e:
        return None, f"no int8 export for {out.name}: {e}"
    return out, ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_options(parser)
    parser.add_argument("--int8", action="store_true",
                        help="also int8 exports (fastattn export --quantize int8; int8-static for OpenVINO)")
    parser.add_argument("--export", action="append", default=[], type=Path, help="add a ready export directory")
    parser.add_argument("-p", "--provider", action="append", default=None, help="providers [cpu, openvino]")
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--workdir", type=Path, default=None, help="checkpoints and exports [build/bench]")
    parser.add_argument("--fresh", action="store_true", help="re-export even when an export is current")
    args = parser.parse_args(argv)
    providers = args.provider or ["cpu", "openvino"]
    out = out_dir(args)
    workdir = args.workdir or work_dir(args, out, "bench")
    models = SMOKE_MODELS if args.smoke else MODELS
    exports, checkpoints, notes = [], [], []
    for name, config in models.items():
        ckpt = checkpoint(name, config, workdir)
        checkpoints.append(ckpt)
        for target in (Target(p) for p in providers if p in ("cpu", "openvino", "cuda")):
            exports.append(export_fp32(ckpt, config, target, workdir / f"{name}-fp32-{target.value}",
                                       args.threads, args.smoke, args.fresh))  # fmt: skip
            if args.int8:
                made, why = export_int8(ckpt, config, target, workdir / f"{name}-int8-{target.value}",
                                        args.threads, args.smoke, args.fresh)  # fmt: skip
                exports += [made] if made else []
                notes += [why] if why else []
    exports += args.export
    settings = Settings(args.threads, warmup=1, repeats=2, min_time=0.0, decode_steps=2) if args.smoke else (
        Settings(args.threads))  # fmt: skip
    shapes = dict(batches=(1,), sequences=(16,)) if args.smoke else dict(batches=(1, 8), sequences=(128, 512))
    plan = Plan.create(exports, providers, torch_models=checkpoints, match_target=True, settings=settings, **shapes)
    result = bench(plan, progress=lambda message: print(message, flush=True))
    stem = "providers"
    result.save(out / f"{stem}.json")
    if result.rows:
        plot(result, out / f"{stem}.png")
    flags = [*(["--smoke"] if args.smoke else []), *(["--int8"] if args.int8 else []),
             *(f"-p {p}" for p in args.provider or [])]  # fmt: skip
    text = [
        "# Latency per execution provider: CPU EP vs OpenVINO EP vs PyTorch eager",
        "",
        "The demo model (preset `default`) and a 6-layer d=384 encoder, each exported per provider "
        "(`--match-target`: an export runs on the provider it was lowered for), same weights as the "
        "PyTorch eager rows, same inputs, one run. Reproduce: "
        f"`{command('providers', *flags, setup='make openvino-env' if 'openvino' in providers else '')}`.",
        "",
        about(result),
        markdown(result),
        *(f"- {note}" for note in notes),
        "",
        f"![latency]({stem}.png)",
    ]
    (out / f"{stem}.md").write_text("\n".join(text) + "\n")
    print(markdown(result))
    print(f"wrote {out / stem}.{{json,png,md}}")
    return 1 if result.failures or not result.rows else 0


if __name__ == "__main__":
    sys.exit(main())

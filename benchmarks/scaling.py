"""Scaling with sequence length: full, sliding-window, global+local and hierarchical attention, prefill and decode.

2-layer decoders, d=512, 8 heads x 64 (the shapes of ``benchmarks/lowering.py``), identical
but for the attention of every layer: full causal, sliding window W=256, 16 global tokens
plus a W=256 window, or hierarchical with blocks of 64 or 128. Each is exported for the CPU
EP, and the windowed and hierarchical ones also for OpenVINO EP (run in .venv-openvino),
with lowering chosen by measurement at long shapes (prefill 1x4096, decode 1x1+4096), then
timed by ``fastattn bench`` on the provider each was lowered for, at batch 1, S = 512 ..
16384. A window's prefill should grow linearly (log-log slope ~1), full attention's towards
quadratic (~2), hierarchical's as S·(B + S/B): ~1 while S/B < B, towards 2 beyond.

    python -m benchmarks.scaling            # -> benchmarks/results/scaling.{json,png,md}
    python -m benchmarks.scaling --smoke --out DIR    # tiny models, S = 32, 64 (benchmarks/record.py)

Run it on a quiet machine: the long sequences take several minutes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.providers import checkpoint, is_current
from benchmarks.record import add_options, command, out_dir, work_dir
from fastattn.bench import Plan, Settings, bench
from fastattn.bench.plan import default_threads
from fastattn.bench.plot import plot
from fastattn.bench.table import about, markdown, slopes
from fastattn.exporter.lowering.measure import ShapeCase
from fastattn.exporter.pipeline import ExportOptions, export
from fastattn.models import LayerAttention, ModelConfig
from fastattn.runtime.manifest import Manifest
from fastattn.targets import Target

WINDOW = 256
BASE = ModelConfig(name="full-2x512", vocab_size=256, d_model=512, num_heads=8, kv_heads=8, ffn_dim=1024,
                   decoder_layers=(LayerAttention(),) * 2)  # fmt: skip
MODELS = {
    "full": BASE,
    "sliding": BASE.replace(name=f"sliding{WINDOW}-2x512",
                            decoder_layers=(LayerAttention.parse(f"sliding:{WINDOW}"),) * 2),
    "global_local": BASE.replace(name=f"global16-local{WINDOW}-2x512",
                                 decoder_layers=(LayerAttention.parse(f"global_local:16:{WINDOW}"),) * 2),
    "hierarchical64": BASE.replace(name="hierarchical64-2x512",
                                   decoder_layers=(LayerAttention.parse("hierarchical:64"),) * 2),
    "hierarchical128": BASE.replace(name="hierarchical128-2x512",
                                    decoder_layers=(LayerAttention.parse("hierarchical:128"),) * 2),
}  # fmt: skip
OPENVINO = ("sliding", "global_local", "hierarchical64", "hierarchical128")  # also exported for OpenVINO EP
SEQUENCES = (512, 1024, 2048, 4096, 8192, 16384)
PROFILE = (ShapeCase("prefill", 1, 4096), ShapeCase("decode", 1, 1, past=4096))
# Two models in the smoke run (a window and hierarchical blocks), and not global_local: its
# choice between kernels is timed, and an export that times mha fastest fails validation on
# left-padded rows (the values it leaves in the global slots of padding positions differ from
# PyTorch's), which would make the smoke test depend on timing.
_SMOKE = BASE.replace(name="sliding16-smoke", vocab_size=64, d_model=32, num_heads=4, kv_heads=4, ffn_dim=64,
                      decoder_layers=(LayerAttention.parse("sliding:16"),))  # fmt: skip
SMOKE_MODELS = {"sliding": _SMOKE, "hierarchical64": _SMOKE.replace(
    name="hierarchical8-smoke", decoder_layers=(LayerAttention.parse("hierarchical:8"),))}  # fmt: skip
SMOKE_SEQUENCES = (32, 64)
SMOKE_PROFILE = (ShapeCase("prefill", 1, 64), ShapeCase("decode", 1, 1, past=64))


def summary_lines(result) -> list[str]:
    """Per export: the log-log slope of prefill p50 between consecutive lengths, as markdown table lines."""
    lengths = result.plan["sequences"]
    steps = [f"{a}→{b}" for a, b in zip(lengths, lengths[1:], strict=False)]
    lines = ["| export | attention | " + " | ".join(steps) + " |", "|---|---|" + "---:|" * len(steps)]
    slope = slopes(result.rows)
    for label in dict.fromkeys(r.export for r in result.rows):
        rows = sorted((r for r in result.rows if r.export == label), key=lambda r: r.sequence)
        cells = [f"{slope[r.key()]:.2f}" if r.key() in slope else "-" for r in rows[1:]]
        lines.append(f"| {label} | {rows[0].attention} | " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_options(parser)
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per configuration (at least)")
    parser.add_argument("--decode-steps", type=int, default=8)
    parser.add_argument("--workdir", type=Path, default=None, help="checkpoints and exports [build/scaling]")
    parser.add_argument("--fresh", action="store_true", help="re-export even when an export is current")
    parser.add_argument("--no-openvino", action="store_true", help="CPU EP only")
    args = parser.parse_args(argv)
    out = out_dir(args)
    workdir = args.workdir or work_dir(args, out, "scaling")
    models, sequences, profile = (SMOKE_MODELS, SMOKE_SEQUENCES, SMOKE_PROFILE) if args.smoke else (
        MODELS, SEQUENCES, PROFILE)  # fmt: skip
    exports = []
    for name, config in models.items():
        ckpt = checkpoint(name, config, workdir)
        targets = [Target.CPU] + ([Target.OPENVINO] if name in OPENVINO and not args.no_openvino else [])
        for target in targets:
            directory = workdir / f"{name}-{target.value}"
            if args.fresh or not is_current(directory, config, target, "fp32"):
                print(f"exporting {directory.name}", flush=True)
                export(ckpt, ExportOptions(directory, target=target, threads=args.threads, force=True,
                                           profile=profile, repeats=1 if args.smoke else 10))  # fmt: skip
            exports.append(directory)
    settings = Settings(args.threads, warmup=1, repeats=2, min_time=0.0, decode_steps=2) if args.smoke else (
        Settings(args.threads, warmup=2, repeats=args.repeats, decode_steps=args.decode_steps))  # fmt: skip
    providers = ["cpu"] if args.no_openvino else ["cpu", "openvino"]
    plan = Plan.create(exports, providers, batches=(1,), sequences=sequences, sweep=True, match_target=True,
                       settings=settings)  # fmt: skip
    result = bench(plan, progress=lambda message: print(message, flush=True))
    stem = "scaling"
    result.save(out / f"{stem}.json")
    if result.rows:
        plot(result, out / f"{stem}.png")
    kernels = {e.name: sorted({a.lowering for a in Manifest.load(e).attention}) for e in exports}
    full = next(iter(models.values()))  # the full-attention model of a real run
    kinds = " vs ".join(str(m.decoder_layers[0]) for m in models.values())
    text = [
        "# Scaling with sequence length: full vs sliding window vs global+local vs hierarchical, CPU EP and "
        "OpenVINO EP",
        "",
        f"{len(models)} {len(full.decoder_layers)}-layer decoders (d={full.d_model}, {full.num_heads} heads x "
        f"{full.head_size}), identical but for attention: {kinds}; batch 1; prefill of S tokens, "
        "and decode steps on a cache "
        f"of S tokens; `-openvino` exports ran on OpenVINO EP, the others on the CPU EP. Kernels chosen by "
        f"measurement at the export: {kernels}. Reproduce: "
        f"`{command('scaling', *(['--smoke'] if args.smoke else []))}`.",
        "",
        about(result),
        "**log-log slope of prefill p50 between consecutive lengths** (1 = linear, 2 = quadratic)",
        "",
        *summary_lines(result),
        "",
        markdown(result),
        f"![scaling]({stem}.png)",
    ]
    (out / f"{stem}.md").write_text("\n".join(text) + "\n")
    print("\n".join(summary_lines(result)))
    print(f"wrote {out / stem}.{{json,png,md}}")
    return 1 if result.failures or not result.rows else 0


if __name__ == "__main__":
    sys.exit(main())

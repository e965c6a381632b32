"""Static int8 (QDQ) against fp32 on OpenVINO EP, with the graph in one OpenVINO partition and split as before.

OpenVINO EP (onnxruntime-openvino 1.24.1) refuses nodes whose non-initializer inputs or
outputs are 0-D unless the op is in a short list; the inlined attention bodies are full of
such scalars, so exports used to run as a dozen OpenVINO subgraphs with CPU EP nodes between
them, and static int8 gained nothing. The exporter now folds those scalars (the
``FoldConstants`` pass, ``fastattn/exporter/passes/fold_constants.py``). This runs both forms:
``-split`` exports are made with that pass turned off (as exports were before it existed), the
others as the exporter makes them.

Models: the demo decoder (preset ``default``) and the 6-layer d=384 encoder of
``benchmarks/encoder_vs_eager.py``; fp32 and int8-static (random calibration samples, the
accuracy gate on random samples), each timed by ``fastattn bench`` on OpenVINO EP in
.venv-openvino, one worker process per configuration, batch 1 and 8, S = 128 and 512.

    python -m benchmarks.openvino_int8                    # -> benchmarks/results/openvino_int8.{json,md}
    python -m benchmarks.openvino_int8 --smoke --out DIR  # one tiny model, S = 16
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from unittest import mock

import onnx_ir as ir

from benchmarks.encoder_vs_eager import CONFIG as ENCODER
from benchmarks.providers import SMOKE_MODELS, SMOKE_PROFILE, checkpoint, is_current
from benchmarks.record import add_options, command, out_dir, work_dir, write
from fastattn.bench import Plan, Settings, bench
from fastattn.bench.plan import default_threads
from fastattn.bench.table import about, markdown
from fastattn.exporter.passes import FoldConstants
from fastattn.exporter.pipeline import ExportOptions, export
from fastattn.models import preset
from fastattn.quantize import Mode, QuantOptions
from fastattn.quantize.step import QuantizeStep
from fastattn.runtime.manifest import Manifest
from fastattn.targets import Target

MODELS = {"default": preset("default"), "encoder-6x384": ENCODER}


def _unfolded(self, model: ir.Model) -> ir.passes.PassResult:
    return ir.passes.PassResult(model, modified=False)


def make(ckpt: Path, config, out: Path, mode: Mode | None, split: bool, threads: int, smoke: bool) -> Path:
    precision = "int8" if mode else "fp32"
    if is_current(out, config, Target.OPENVINO, precision) and (out / ".split").exists() == split:
        return out
    print(f"exporting {out.name}", flush=True)
    step = QuantizeStep(QuantOptions(mode, target=Target.OPENVINO)) if mode else None
    options = ExportOptions(out, target=Target.OPENVINO, threads=threads, force=True, quantize=step,
                            profile=SMOKE_PROFILE if smoke else (), repeats=1 if smoke else 10)  # fmt: skip
    if split:  # the graph as the exporter left it before folding scalars for OpenVINO EP
        with mock.patch.object(FoldConstants, "call", _unfolded):
            export(ckpt, options)
        (out / ".split").touch()
    else:
        export(ckpt, options)
    return out


def partitions(directory: Path) -> str:
    """Nodes per provider of the export's first graph on OpenVINO EP, as its placement check recorded them."""
    placement = Manifest.load(directory).placement
    if placement is None:
        return "-"
    graph = next(iter(placement.graphs.values()))
    return ", ".join(f"{provider.removesuffix('ExecutionProvider')} {n}" for provider, n in graph.kernels.items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_options(parser)
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--workdir", type=Path, default=None, help="checkpoints and exports [build/openvino-int8]")
    args = parser.parse_args(argv)
    out = out_dir(args)
    workdir = args.workdir or work_dir(args, out, "openvino-int8")
    exports = []
    for name, config in (SMOKE_MODELS if args.smoke else MODELS).items():
        ckpt = checkpoint(name, config, workdir)
        for split in (True, False):
            for mode in (None, Mode.INT8_STATIC):
                label = f"{name}-{'int8' if mode else 'fp32'}{'-split' if split else ''}"
                exports.append(make(ckpt, config, workdir / label, mode, split, args.threads, args.smoke))
    settings = Settings(args.threads, warmup=1, repeats=2, min_time=0.0, decode_steps=2) if args.smoke else (
        Settings(args.threads))  # fmt: skip
    shapes = dict(batches=(1,), sequences=(16,)) if args.smoke else dict(batches=(1, 8), sequences=(128, 512))
    plan = Plan.create(exports, ["openvino"], settings=settings, **shapes)
    result = bench(plan, progress=lambda message: print(message, flush=True))
    cmd = command("openvino_int8", *(["--smoke"] if args.smoke else []), setup="make openvino-env")
    placement = [f"| {e.name} | {partitions(e)} |" for e in exports]
    text = [
        "# Static int8 vs fp32 on OpenVINO EP: one partition vs the split graph",
        "",
        "Each model exported four ways for `-t openvino`: fp32 and `--quantize int8-static`, with the "
        "exporter's scalar folding (one OpenVINO partition) and without it (`-split`, the graph as "
        f"exports were before). Reproduce: `{cmd}`.",
        "",
        "**nodes per provider (the export's placement check; an OpenVINO subgraph counts as one node)**",
        "",
        "| export | nodes per provider |",
        "|---|---|",
        *placement,
        "",
        about(result),
        markdown(result),
    ]
    record = {"command": cmd, "placement": {e.name: partitions(e) for e in exports}, "bench": result.to_dict()}
    write(out, "openvino_int8", record, "\n".join(text) + "\n")
    print(markdown(result))
    return 1 if result.failures or not result.rows else 0


if __name__ == "__main__":
    sys.exit(main())

"""Static int8 (QDQ) against fp32 on OpenVINO EP, with the graph in one OpenVINO partition and split as before.

OpenVINO EP (onnxruntime-openvino 1.24.1) refuses nodes whose non-initializer inputs or
outputs are 0-D unless the op is in a short list; the inlined attention bodies are full of
such scalars, so exports used to run as a dozen OpenVINO subgraphs with CPU EP nodes between
them, and static int8 gained nothing. The exporter now folds those scalars
(``fastattn/exporter/openvino_graph.py``). This runs both forms: ``-split`` exports are made
with that step turned off (as before it existed), the others as the exporter makes them.

Models: the demo decoder (preset ``default``) and the 6-layer d=384 encoder of
``benchmarks/encoder_vs_eager.py``; fp32 and int8-static (random calibration samples, the
accuracy gate on random samples), each timed by ``fastattn bench`` on OpenVINO EP in
.venv-openvino, one worker process per configuration.

    python -m benchmarks.openvino_int8          # -> benchmarks/results/openvino_int8.{json,md}
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from unittest import mock

from fastattn.exporter.quantization import QuantizeStep

from benchmarks.encoder_vs_eager import CONFIG as ENCODER
from benchmarks.providers import checkpoint, is_current
from fastattn.bench import Plan, Settings, bench
from fastattn.bench.plan import default_threads
from fastattn.bench.table import about, markdown
from fastattn.exporter.pipeline import ExportOptions, export
from fastattn.models import preset
from fastattn.quantize import Mode, QuantOptions
from fastattn.targets import Target

RESULTS = Path(__file__).parent / "results"
MODELS = {"default": preset("default"), "encoder-6x384": ENCODER}


def make(ckpt: Path, config, out: Path, mode: Mode | None, split: bool, threads: int) -> Path:
    precision = "int8" if mode else "fp32"
    if is_current(out, config, Target.OPENVINO, precision):
        return out
    print(f"exporting {out.name}", flush=True)
    step = QuantizeStep(QuantOptions(mode, provider="openvino")) if mode else None
    options = ExportOptions(out, target=Target.OPENVINO, threads=threads, force=True, quantize=step)
    if split:  # the graph as the exporter left it before folding scalars for OpenVINO EP
        with mock.patch("fastattn.exporter.openvino_graph.one_partition", lambda model: None):
            export(ckpt, options)
    else:
        export(ckpt, options)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--workdir", type=Path, default=Path("build") / "openvino-int8")
    args = parser.parse_args(argv)
    exports = []
    for name, config in MODELS.items():
        ckpt = checkpoint(name, config, args.workdir)
        for split in (True, False):
            for mode in (None, Mode.INT8_STATIC):
                label = f"{name}-{'int8' if mode else 'fp32'}{'-split' if split else ''}"
                exports.append(make(ckpt, config, args.workdir / label, mode, split, args.threads))
    plan = Plan.create(exports, ["openvino"], batches=(1, 8), sequences=(128, 512), settings=Settings(args.threads))
    result = bench(plan, progress=lambda message: print(message, flush=True))
    result.save(RESULTS / "openvino_int8.json")
    text = [
        "# Static int8 vs fp32 on OpenVINO EP: one partition vs the split graph",
        "",
        "Each model exported four ways for `-t openvino`: fp32 and `--quantize int8-static`, with the "
        "exporter's scalar folding (one OpenVINO partition) and without it (`-split`, the graph as "
        "exports were before). Reproduce: `python -m benchmarks.openvino_int8`.",
        "",
        about(result),
        markdown(result),
    ]
    (RESULTS / "openvino_int8.md").write_text("\n".join(text) + "\n")
    print(markdown(result))
    return 1 if result.failures else 0


if __name__ == "__main__":
    sys.exit(main())

"""A 6-layer, d=384, 12-head encoder: fastattn's optimized fp32 export vs PyTorch eager, same weights.

Batch 1, S = 128 and 512, 2 threads for both. Target (issue 3): >= 2.5x PyTorch eager.

    python -m benchmarks.encoder_vs_eager    # writes benchmarks/results/encoder_vs_eager.{json,md}
    python -m benchmarks.encoder_vs_eager --smoke --out DIR     # tiny sizes (benchmarks/record.py)
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from benchmarks.machine import describe
from benchmarks.record import add_options, command, out_dir, write
from benchmarks.timing import block_medians
from fastattn.exporter.lowering.measure import ShapeCase
from fastattn.exporter.pipeline import ExportOptions, export
from fastattn.models import LayerAttention, ModelConfig, build, save
from fastattn.models.config import NormPosition, Positions
from fastattn.targets import Target

THREADS = 2
SEQUENCES = (128, 512)
CONFIG = ModelConfig(
    name="encoder-6x384", vocab_size=8192, d_model=384, num_heads=12, kv_heads=12, ffn_dim=1536,
    encoder_layers=(LayerAttention(),) * 6, norm_position=NormPosition.POST, positions=Positions.LEARNED,
    max_positions=512,
)  # fmt: skip
SMOKE = CONFIG.replace(name="encoder-smoke", vocab_size=64, d_model=32, num_heads=4, kv_heads=4, ffn_dim=64,
                       encoder_layers=(LayerAttention(),), max_positions=64)  # fmt: skip
SMOKE_SEQUENCES = (16, 32)
SMOKE_PROFILE = (ShapeCase("encode", 1, 32),)


def run(config: ModelConfig, sequences: tuple[int, ...], smoke: bool) -> dict:
    torch.set_num_threads(THREADS)
    model = build(config, seed=0)
    timing = {"rounds": 1, "block": 1, "pause": 0.0} if smoke else {}
    measure = {"repeats": 1, "profile": SMOKE_PROFILE} if smoke else {}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = save(model, Path(tmp) / "encoder.pt")
        exports = {t: export(ckpt, ExportOptions(Path(tmp) / t.value, target=t, threads=THREADS, **measure))
                   for t in (Target.PORTABLE, Target.CPU)}  # fmt: skip
        options = ort.SessionOptions()
        options.intra_op_num_threads = THREADS
        sessions = {t: ort.InferenceSession(str(r.output / "model.onnx"), options, providers=["CPUExecutionProvider"])
                    for t, r in exports.items()}  # fmt: skip
        kernels = sorted({a.lowering for a in exports[Target.CPU].manifest.attention})
        for S in sequences:
            ids = torch.randint(0, config.vocab_size, (1, S))
            mask = torch.ones(1, S, dtype=torch.long)
            feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
            with torch.no_grad():
                want = model(ids, mask)[0].numpy()
            got = sessions[Target.CPU].run(None, feeds)[0]
            error = float(np.abs(got - want).max())

            def eager():
                with torch.no_grad():
                    model(ids, mask)

            ms = block_medians({
                "pytorch_eager": eager,
                "onnx_portable": lambda: sessions[Target.PORTABLE].run(None, feeds),
                "onnx_cpu_optimized": lambda: sessions[Target.CPU].run(None, feeds),
            }, **timing)  # fmt: skip
            rows.append({"sequence": S, **{k: round(v, 3) for k, v in ms.items()},
                         "speedup_vs_eager": round(ms["pytorch_eager"] / ms["onnx_cpu_optimized"], 2),
                         "max_abs_error": error})  # fmt: skip
            print(rows[-1])
    rounds = "1 round of 1-call blocks" if smoke else "5 alternating rounds of 10-call blocks"
    return {"machine": describe(THREADS), "config": config.to_dict(), "batch": 1, "statistic": f"median of {rounds}",
            "attention_kernels": kernels, "fusions": exports[Target.CPU].manifest.fusions, "rows": rows}  # fmt: skip


def markdown(result: dict) -> str:
    c = result["config"]
    lines = [
        f"# {len(c['encoder_layers'])}-layer d={c['d_model']} {c['num_heads']}-head encoder: optimized ONNX (CPU EP) vs PyTorch eager",
        "",
        f"{result['machine']['cpu']}, {THREADS} threads, batch 1, fp32, same weights; {result['statistic']}.",
        f"Attention kernels chosen: {', '.join(result['attention_kernels'])}; fusions: {result['fusions']}.",
        "",
        "| S | PyTorch eager (ms) | ONNX portable (ms) | ONNX optimized (ms) | speedup vs eager | max abs error |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(f"| {r['sequence']} | {r['pytorch_eager']} | {r['onnx_portable']} | {r['onnx_cpu_optimized']} | "
                     f"{r['speedup_vs_eager']}x | {r['max_abs_error']:.1e} |")  # fmt: skip
    lines.append("\nTarget: >= 2.5x PyTorch eager (Optimum O3 reaches 2.1x here, per DESIGN.md).")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_options(parser)
    args = parser.parse_args(argv)
    out = out_dir(args)
    result = run(SMOKE if args.smoke else CONFIG, SMOKE_SEQUENCES if args.smoke else SEQUENCES, args.smoke)
    result["command"] = command("encoder_vs_eager", *(["--smoke"] if args.smoke else []))
    write(out, "encoder_vs_eager", result, markdown(result))


if __name__ == "__main__":
    main()

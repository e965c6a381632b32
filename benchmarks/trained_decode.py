"""Generation with a trained LM: default path vs --kv-buffer, fp32 / int8 / int4, tokens/s and greedy agreement.

The 6-layer d=512 byte-level LM of benchmarks/quantization.py (trained on the stdlib sources,
cached by fastattn.train.cache), exported six ways: default path and ``--kv-buffer``, each
fp32, and int8 and int4 quantized from that fp32 export (all through the accuracy gate on its
held-out text). Four Python prompts, 128 greedy tokens each, batch 1, 2 threads, after one
warm-up generation. Agreement: fraction of positions equal to the same path's fp32 tokens.

    python -m benchmarks.trained_decode      # -> benchmarks/results/trained_decode.{json,md}
    python -m benchmarks.trained_decode --smoke --out DIR    # a tiny LM, 1 prompt (benchmarks/record.py)
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.machine import describe
from benchmarks.quantization import DECODER, DECODER_TRAINING, SMOKE_TRAINING
from benchmarks.record import add_options, command, out_dir, smoke_cache, work_dir, write
from fastattn.models import LayerAttention, ModelConfig

THREADS = 2
PROMPTS = [b"import os\nimport sys\n\ndef main(argv):\n    ", b"class Parser:\n    def __init__(self, text",
           b"    for i in range(len(items)):\n        if ", b"def test_split(self):\n        self.assertEqual("]  # fmt: skip


@dataclass(frozen=True)
class Recipe:
    config: ModelConfig = DECODER
    training: dict = field(default_factory=lambda: DECODER_TRAINING)
    prompts: tuple[bytes, ...] = tuple(PROMPTS)
    new: int = 128
    export: dict = field(default_factory=dict)  # ExportOptions: lowering profile and repeats
    gate: object = None  # None: each mode's own gate


def smoke_recipe() -> Recipe:
    from fastattn.exporter.lowering.measure import ShapeCase
    from fastattn.quantize.gates import Gate

    # head size 16: --kv-buffer folds rotary into GQA for multiples of 16 only
    config = DECODER.replace(name="lm-smoke-kv", d_model=64, num_heads=4, kv_heads=2, ffn_dim=64,
                             decoder_layers=(LayerAttention(),))  # fmt: skip
    return Recipe(config, SMOKE_TRAINING, tuple(PROMPTS[:1]), new=8,
                  export={"repeats": 1, "profile": (ShapeCase("prefill", 1, 32), ShapeCase("decode", 1, 1, past=32))},
                  gate=Gate(max_ppl_increase=1.0, min_cosine=0.0, max_accuracy_drop=1.0))  # fmt: skip


def run(recipe: Recipe, work: Path) -> dict:
    import fastattn.runtime as rt
    from fastattn.exporter.pipeline import ExportOptions, export, requantize
    from fastattn.quantize import Mode, QuantOptions
    from fastattn.quantize.step import QuantizeStep
    from fastattn.train.cache import trained

    ckpt = trained("lm", recipe.config, **recipe.training)
    rows, tokens = [], {}
    for kv in (False, True):
        path = "kv-buffer " if kv else "default "
        fp32 = work / (path + "fp32").replace(" ", "-")
        for mode in (None, Mode.INT8, Mode.INT4):
            name = path + (mode.value if mode else "fp32")
            out = work / name.replace(" ", "-")
            if not (out / "fastattn.json").is_file():
                if mode is None:
                    export(ckpt, ExportOptions(out, force=True, threads=THREADS, kv_buffer=kv, **recipe.export))
                else:
                    step = QuantizeStep(QuantOptions(mode), gate=recipe.gate)
                    requantize(fp32, step, out, force=True, threads=THREADS)
            model = rt.load(out, threads=THREADS)
            runs = []
            for prompt in recipe.prompts:
                model.generate(list(prompt), 8)
                runs.append(model.generate(list(prompt), recipe.new))
            tokens[name] = [r.tokens[0] for r in runs]
            base = tokens[path + "fp32"]
            same = [np.mean([a == b for a, b in zip(x, y, strict=True)]) for x, y in zip(tokens[name], base, strict=True)]
            q = model.manifest.quantization
            figures = q.figures if q is not None else {}
            ppl = next((f.perplexity for f in (figures.get("quantized"), figures.get("float")) if f and f.perplexity), None)
            rows.append({
                "export": name, "tokens_per_s": float(np.median([r.tokens_per_second for r in runs])),
                "prefill_ms": float(np.median([r.prefill_seconds for r in runs])) * 1e3,
                "agreement_with_fp32": float(np.mean(same)), "perplexity": ppl,
            })  # fmt: skip
    same_paths = tokens["kv-buffer fp32"] == tokens["default fp32"]
    c = recipe.config
    return {"machine": describe(THREADS), "new": recipe.new, "prompts": len(recipe.prompts),
            "model": {"layers": len(c.decoder_layers), "d_model": c.d_model, "heads": c.num_heads, "kv_heads": c.kv_heads},
            "rows": rows, "kv_buffer_fp32_tokens_equal_default": same_paths}  # fmt: skip


def markdown(result: dict) -> str:
    m = result.get("model", {"layers": 6, "d_model": 512, "heads": 8, "kv_heads": 2})
    lines = [
        "# Generation with a trained LM: default path vs --kv-buffer",
        "",
        f"{m['layers']}-layer d={m['d_model']} byte-level LM ({m['heads']}/{m['kv_heads']} heads, vocab 256) trained on "
        f"the stdlib sources; {result.get('prompts', 4)} Python prompts, "
        f"{result['new']} greedy tokens each, batch 1, {THREADS} threads, medians. Agreement: positions equal to the "
        "same path's fp32 tokens. Perplexity: held-out, from the export's accuracy gate (fp32: the float model's).",
        "",
        "| export | tokens/s | prefill ms | agreement with fp32 | perplexity |",
        "|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        ppl = f"{r['perplexity']:.4f}" if r["perplexity"] else "-"
        lines.append(f"| {r['export']} | {r['tokens_per_s']:.0f} | {r['prefill_ms']:.2f} | "
                     f"{r['agreement_with_fp32']:.1%} | {ppl} |")  # fmt: skip
    lines += ["", f"--kv-buffer fp32 greedy tokens equal the default fp32 ones: {result['kv_buffer_fp32_tokens_equal_default']}."]
    mach = result["machine"]
    lines += ["", f"Machine: {mach.get('cpu', '?')}, {THREADS} threads; onnxruntime {mach['versions'].get('onnxruntime')}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_options(parser)
    args = parser.parse_args(argv)
    out = out_dir(args)
    work = work_dir(args, out, "trained-decode")
    if args.smoke:
        smoke_cache(work)
    result = run(smoke_recipe() if args.smoke else Recipe(), work)
    result["command"] = command("trained_decode", *(["--smoke"] if args.smoke else []))
    write(out, "trained_decode", result, markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()

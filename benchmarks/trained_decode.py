"""Generation with a trained LM: default path vs --kv-buffer, fp32 / int8 / int4, tokens/s and greedy agreement.

The 6-layer d=512 byte-level LM of benchmarks/quantization.py (trained on the stdlib sources,
cached by fastattn.train.cache), exported six ways: default path and ``--kv-buffer``, each
fp32, int8 and int4 (all through the accuracy gate on its held-out text). Four Python
prompts, 128 greedy tokens each, batch 1, 2 threads, after one warm-up generation. Agreement:
fraction of positions equal to the same path's fp32 tokens.

    python -m benchmarks.trained_decode      # -> benchmarks/results/trained_decode.{json,md}
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from benchmarks.machine import describe
from benchmarks.quantization import DECODER, DECODER_TRAINING

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "build" / "trained-decode"
RESULTS = Path(__file__).parent / "results"
THREADS, NEW = 2, 128
PROMPTS = [b"import os\nimport sys\n\ndef main(argv):\n    ", b"class Parser:\n    def __init__(self, text",
           b"    for i in range(len(items)):\n        if ", b"def test_split(self):\n        self.assertEqual("]  # fmt: skip


def run() -> dict:
    import fastattn.runtime as rt
    from fastattn.exporter.pipeline import ExportOptions, export
    from fastattn.quantize import Mode, QuantOptions
    from fastattn.quantize.step import QuantizeStep
    from fastattn.train.cache import trained

    ckpt = trained("lm", DECODER, **DECODER_TRAINING)
    rows, tokens = [], {}
    for kv in (False, True):
        for mode in (None, Mode.INT8, Mode.INT4):
            name = ("kv-buffer " if kv else "default ") + (mode.value if mode else "fp32")
            out = WORK / name.replace(" ", "-")
            if not (out / "fastattn.json").is_file():
                step = QuantizeStep(QuantOptions(mode)) if mode else None
                export(ckpt, ExportOptions(out, force=True, threads=THREADS, kv_buffer=kv, quantize=step))
            model = rt.load(out, threads=THREADS)
            runs = []
            for prompt in PROMPTS:
                model.generate(list(prompt), 8)
                runs.append(model.generate(list(prompt), NEW))
            tokens[name] = [r.tokens[0] for r in runs]
            base = tokens[("kv-buffer " if kv else "default ") + "fp32"]
            same = [np.mean([a == b for a, b in zip(x, y, strict=True)]) for x, y in zip(tokens[name], base, strict=True)]
            q = model.manifest.quantization or {}
            figures = q.get("figures", {})
            rows.append({
                "export": name, "tokens_per_s": float(np.median([r.tokens_per_second for r in runs])),
                "prefill_ms": float(np.median([r.prefill_seconds for r in runs])) * 1e3,
                "agreement_with_fp32": float(np.mean(same)),
                "perplexity": figures.get("quantized", {}).get("perplexity") or figures.get("float", {}).get("perplexity"),
            })  # fmt: skip
    same_paths = tokens["kv-buffer fp32"] == tokens["default fp32"]
    return {"machine": describe(THREADS), "new": NEW, "rows": rows, "kv_buffer_fp32_tokens_equal_default": same_paths}


def markdown(result: dict) -> str:
    lines = [
        "# Generation with a trained LM: default path vs --kv-buffer",
        "",
        f"6-layer d=512 byte-level LM (8/2 heads, vocab 256) trained on the stdlib sources; 4 Python prompts, "
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
    m = result["machine"]
    lines += ["", f"Machine: {m.get('cpu', '?')}, {THREADS} threads; onnxruntime {m['versions'].get('onnxruntime')}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    result = run()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "trained_decode.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "trained_decode.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()

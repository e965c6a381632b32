"""Greedy decoding on ONE Hugging Face checkpoint: fastattn's export of it vs ONNX Runtime GenAI's build of it.

The random ``LlamaForCausalLM`` of benchmarks/genai_llama.py (6 layers, d=512, 8 heads, FFN 1536,
vocabulary 32000, untied; seed 0; saved by transformers in ``.venv-genai``) is the checkpoint
directory both libraries read: GenAI's model builder (fp32, int4) and ``fastattn export`` (fp32,
``--kv-buffer`` fp32, and int4 of each, ``requantize``). The weights are identical, so tokens are
compared across libraries: fastattn fp32 vs GenAI fp32, fastattn int4 vs GenAI int4.

Rows run as in benchmarks/genai.py (a fresh worker process per row and round, one warm-up, medians),
shorter: 3 prompts of 32 random tokens + 128 new tokens, 2 runs each, 2 rounds.

    make genai-env && python -m benchmarks.genai_hf [--rebuild]   # writes benchmarks/results/genai_hf.{json,md}
    python -m benchmarks.genai_hf --smoke --out DIR    # a 1-layer checkpoint, 4 new tokens, one round
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

from benchmarks.genai import (
    MAIN_PY,
    NEW,
    ROOT,
    SMOKE_SHAPE,
    THREADS,
    Shape,
    agreement,
    build_llama,
    cached,
    digest,
    genai_env,
    quantization_figures,
    run_worker,
    summarise,
)  # fmt: skip
from benchmarks.genai_report import QUIET
from benchmarks.genai_worker import prompts
from benchmarks.machine import describe
from benchmarks.record import add_options, command, out_dir, work_dir, write

PLAN = {"prompts": 3, "runs": 2, "rounds": 2, "new": NEW, "wait_quiet_s": 30}
SMOKE = {"prompts": 1, "runs": 1, "rounds": 1, "new": 4, "wait_quiet_s": 0}
CONFIGS = (  # (name, runtime, precision, backend)
    ("fastattn-fp32", "fastattn", "fp32", "fastattn"),
    ("fastattn-int4", "fastattn", "int4", "fastattn"),
    ("fastattn-kv-fp32", "fastattn --kv-buffer", "fp32", "fastattn"),
    ("fastattn-kv-int4", "fastattn --kv-buffer", "int4", "fastattn"),
    ("genai-fp32", "ORT GenAI", "fp32", "genai"),
    ("genai-int4", "ORT GenAI", "int4", "genai"),
)
# whose tokens each row is compared with: across libraries on identical weights
REFERENCE = {"fastattn-fp32": "genai-fp32", "fastattn-kv-fp32": "genai-fp32", "fastattn-int4": "genai-int4",
             "fastattn-kv-int4": "genai-int4", "genai-int4": "genai-fp32"}  # fmt: skip
RECIPE = "fastattn export of llama/checkpoint: fp32, --kv-buffer fp32; int4 requantized from each, gate relaxed"
# A random model: its int4 gate figures are recorded, but the gate is relaxed so that every weight MatMul is
# quantized, as GenAI's int4 build does (a failing gate would keep the most sensitive weights in float).
RELAXED = {"max_ppl_increase": 10.0, "min_cosine": 0.0, "max_accuracy_drop": 1.0}


def build_fastattn(checkpoint: Path, directory: Path, smoke: bool) -> None:
    """The exports of the checkpoint directory GenAI's builder read (run in a child process); a smoke build
    times its lowering candidates once, at its own tiny shapes."""
    from fastattn.errors import ValidationFailed
    from fastattn.exporter.lowering.measure import ShapeCase
    from fastattn.exporter.pipeline import ExportOptions, export, requantize
    from fastattn.quantize import Mode, QuantOptions
    from fastattn.quantize.modes import MODES
    from fastattn.quantize.step import QuantizeStep

    prompt = SMOKE_SHAPE.prompt
    measure = {"repeats": 1, "profile": (ShapeCase("prefill", 1, prompt), ShapeCase("decode", 1, 1, past=prompt))}
    info = {}
    for name, kv in (("fp32", False), ("kv-fp32", True)):
        options = ExportOptions(directory / name, threads=THREADS, kv_buffer=kv, **(measure if smoke else {}))
        result = export(checkpoint, options)
        info[name] = {"export_s": round(result.timings["total"], 1), "attention": sorted({a.lowering for a in result.manifest.attention}),
                      "fusions": result.manifest.fusions["model"]}  # fmt: skip
        int4 = name.replace("fp32", "int4")
        gate = MODES[Mode.INT4].gate.relaxed(**RELAXED)
        try:
            requantize(result.output, QuantizeStep(QuantOptions(Mode.INT4), gate), directory / int4, threads=THREADS)
            info[int4] = {"validation": "passed"}
        except ValidationFailed as e:  # the rejected export still runs, and is marked so
            (directory / f"{int4}.rejected").rename(directory / int4)
            info[int4] = {"validation": f"rejected by fastattn's int4 validation: {e.what}"}
    (directory / "info.json").write_text(json.dumps(info, indent=2) + "\n")


def markdown(result: dict) -> str:
    machine, settings, rows = result["machine"], result["settings"], {r["name"]: r for r in result["rows"]}
    shape = result["shape"]
    versions = result["genai_env_versions"]
    lines = [
        "# One Hugging Face checkpoint, two libraries: fastattn vs ONNX Runtime GenAI",
        "",
        f"{machine['cpu']}, {THREADS} threads, batch 1, prompt {settings['prompt_tokens']} random tokens + {settings['new']} new tokens "
        f"(greedy, no EOS), CPU EP; onnxruntime {machine['versions'].get('onnxruntime')}, transformers (fastattn) "
        f"{result['transformers']}; GenAI environment: onnxruntime-genai {versions.get('onnxruntime-genai')}, "
        f"transformers {versions.get('transformers')}. Median over {rows['genai-fp32']['generations']} generations per "
        f"row ({settings['prompts']} prompts x {settings['runs']} runs x {settings['rounds']} rounds, a fresh process "
        f"per row and round). Command: `{result['command']}`.",
        "",
        f"Checkpoint: random `LlamaForCausalLM` of benchmarks/genai_llama.py ({shape['layers']} layers, "
        f"d={shape['d_model']}, {shape['heads']}/{shape['heads']} heads, FFN {shape['ffn']}, vocabulary {shape['vocab']}, "
        "untied, seed 0), `<workdir>/llama/checkpoint/`: GenAI's builder and `fastattn export` read this same "
        "directory, so the weights are identical.",
        "",
        "| row | tokens/s (min-max) | prefill ms | decode ms/token | peak RSS MB | size MB | tokens vs | same positions "
        "(prefix per prompt) | busy |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        agree = r.get("agreement")
        same = f"{agree['positions']:.0%} ({'/'.join(map(str, agree['prefix']))})" if agree else "-"
        lines.append(f"| {name} | **{r['tokens_per_s']:.0f}** ({r['tokens_per_s_min']:.0f}-{r['tokens_per_s_max']:.0f}) "
                     f"| {r['prefill_ms']} | {r['decode_ms_per_token']} | {r['peak_rss_mb']:.0f} | {r['size_mb']} "
                     f"| {r.get('agreement_with', '-')} | {same} | {r['other_cpu_share']:.0%} |")  # fmt: skip
    ratios = result["ratios"]
    busy = max(r["other_cpu_share"] for r in rows.values())
    if busy > QUIET:
        lines += ["", f"**The machine was busy**: other processes used up to {busy:.0%} of the CPUs during the rows "
                  "(column 'busy'), and every row ran 3-8x slower than on a quiet day (benchmarks/results/genai.md). "
                  "The ratios below are provisional; the token comparisons are not affected."]  # fmt: skip
    lines += [
        "",
        f"- fp32: fastattn {ratios['best_fp32']} / GenAI fp32 = **{ratios['fp32']:.2f}x**; "
        f"int4: fastattn {ratios['best_int4']} / GenAI int4 = **{ratios['int4']:.2f}x** tokens/s, "
        f"**{ratios['int4_peak_rss']:.2f}x** its peak RSS.",
        f"- transformers' own greedy tokens (first prompt) vs fastattn fp32: "
        f"{result['transformers_agreement']['positions']:.0%} of positions; vs GenAI fp32: "
        f"{result['genai_transformers_agreement']['positions']:.0%}.",
        "- int4 on both sides quantizes every weight MatMul to 4 bits, block 32, accuracy level 4, but with different "
        "quantizers (GenAI's builder vs onnxruntime's MatMulNBitsQuantizer), so their tokens part where random "
        "logits have near-ties; fp32 tokens are the cross-library check.",
    ]
    for name in ("fastattn-int4", "fastattn-kv-int4"):
        q = rows[name].get("quantization") or {}
        lines.append(f"- {name} gate (relaxed for this random model: every MatMul int4, as GenAI): {q.get('gate')} on "
                     f"{q.get('data')}; perplexity {q.get('float_perplexity')} -> "
                     f"{q.get('quantized_perplexity')}, top-1 agreement {q.get('quantized_agreement')} (the checkpoint's "
                     f"WordLevel tokenizer knows only t0..t{shape['vocab'] - 1}, so stdlib text is mostly <unk>: the gate figures "
                     "measure a random model on a degenerate stream).")  # fmt: skip
    lines.append(f"- fastattn exports: {json.dumps(result['fastattn_exports'])}")
    if any("rejected" in str(v.get("validation", "")) for v in result["fastattn_exports"].values()):
        lines.append("- An int4 row whose export fastattn's validation rejected runs from the rejected directory, as "
                     "said in its `validation` above: the speed and the tokens are still measured.")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_options(parser)
    parser.add_argument("--rebuild", action="store_true", help="Rebuild the cached checkpoint and exports.")
    parser.add_argument("--workdir", type=Path, default=None, help="the models [build/genai]")
    parser.add_argument("--build-fastattn", nargs=2, type=Path, help=argparse.SUPPRESS)  # internal: child process
    args = parser.parse_args(argv)
    if args.build_fastattn:
        build_fastattn(*args.build_fastattn, args.smoke)
        return
    out = out_dir(args)
    plan, shape = (SMOKE, SMOKE_SHAPE) if args.smoke else (PLAN, Shape())
    cache = args.workdir or work_dir(args, out, "genai")
    prompt_ids = prompts(3, shape.prompt, shape.vocab)
    genai_env(args.smoke)
    key = digest(ROOT / "benchmarks" / "genai_llama.py", ROOT / "constraints-genai.txt", json.dumps(prompt_ids[:1]),
                 json.dumps(shape.llama()), str(plan["new"]))  # fmt: skip
    llama = cached(cache / "llama", key, lambda d: build_llama(d, prompt_ids, shape, plan["new"]), args.rebuild)
    checkpoint = llama / "checkpoint"
    fastattn = cached(cache / "fastattn-hf", digest(ROOT / "fastattn", RECIPE, (llama / ".key").read_text()),
                      lambda d: subprocess.run([str(MAIN_PY), "-m", "benchmarks.genai_hf", "--build-fastattn",
                                                str(checkpoint), str(d), *(["--smoke"] if args.smoke else [])],
                                               cwd=ROOT, check=True), args.rebuild)  # fmt: skip
    paths = {"genai-fp32": llama / "fp32", "genai-int4": llama / "int4",
             **{f"fastattn-{p}": fastattn / p for p in ("fp32", "int4", "kv-fp32", "kv-int4")}}  # fmt: skip
    results: dict[str, list[dict]] = {name: [] for name, *_ in CONFIGS}
    for r in range(plan["rounds"]):
        for name, _, _, backend in CONFIGS if r % 2 == 0 else tuple(reversed(CONFIGS)):
            results[name].append(run_worker(name, backend, paths[name], prompt_ids[: plan["prompts"]], plan))
            print(f"round {r + 1} {name:17s} {statistics.median(t['tokens_per_s'] for t in results[name][-1]['timings']):7.0f} "
                  f"tokens/s", flush=True)  # fmt: skip
    rows = {name: summarise(name, rt, prec, results[name], paths[name]) for name, rt, prec, _ in CONFIGS}
    for name, ref in REFERENCE.items():
        rows[name]["agreement_with"] = ref
        rows[name]["agreement"] = agreement(rows[name]["tokens"], rows[ref]["tokens"])
    for name in ("fastattn-int4", "fastattn-kv-int4"):
        rows[name]["quantization"] = quantization_figures(paths[name])
    reference = json.loads((llama / "info.json").read_text())["reference"]["tokens"][: plan["new"]]
    best_fp32 = max(("fastattn-fp32", "fastattn-kv-fp32"), key=lambda n: rows[n]["tokens_per_s"])
    best_int4 = max(("fastattn-int4", "fastattn-kv-int4"), key=lambda n: rows[n]["tokens_per_s"])
    import transformers

    result = {
        "command": command("genai_hf", *(["--smoke"] if args.smoke else []), setup="make genai-env"),
        "machine": describe(THREADS), "genai_env_versions": results["genai-fp32"][0]["versions"],
        "transformers": transformers.__version__, "shape": asdict(shape),
        "settings": {"batch": 1, "threads": THREADS, "prompt_tokens": shape.prompt, **plan,
                     "prompt_ids": prompt_ids[: plan["prompts"]], "load_average_at_end": os.getloadavg()},
        "ratios": {"best_fp32": best_fp32, "fp32": rows[best_fp32]["tokens_per_s"] / rows["genai-fp32"]["tokens_per_s"],
                   "best_int4": best_int4, "int4": rows[best_int4]["tokens_per_s"] / rows["genai-int4"]["tokens_per_s"],
                   "int4_peak_rss": rows[best_int4]["peak_rss_mb"] / rows["genai-int4"]["peak_rss_mb"]},
        "transformers_agreement": agreement(rows["fastattn-fp32"]["tokens"][:1], [reference]),
        "genai_transformers_agreement": agreement(rows["genai-fp32"]["tokens"][:1], [reference]),
        "fastattn_exports": json.loads((fastattn / "info.json").read_text()),
        "rows": list(rows.values()),
    }  # fmt: skip
    text = markdown(result)
    write(out, "genai_hf", result, text)
    print(text)


if __name__ == "__main__":
    sys.exit(main())

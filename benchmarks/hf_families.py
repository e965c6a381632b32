"""Every registered Hugging Face family on its tiny random checkpoint (tests/hf/checkpoints.py: 2 layers,
hidden 64, a BPE or WordPiece tokenizer trained on three stdlib files): attention nodes, export time,
greedy tokens against transformers' generate, and the int8 / int4 gates on held-out text.

    python -m benchmarks.hf_families                    # writes benchmarks/results/hf_families.{json,md}
    python -m benchmarks.hf_families --smoke --out DIR  # bert, gpt2; 4 new tokens; lowering timed once
    python -m benchmarks.hf_families --smoke --out DIR --families bart     # any families, e.g. an encoder-decoder

Random weights: the gate figures say how far quantization moves a model that knows nothing
(perplexities near or above the vocabulary size), not what it costs a trained one.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from benchmarks.record import add_options, command, out_dir, smoke_cache, work_dir, write

THREADS = 2
FULL = {"families": None, "new": 64, "repeats": 10, "budget": None}  # None: every registered family
SMOKE = {"families": ("bert", "gpt2"), "new": 4, "repeats": 1, "budget": 10.0}  # an encoder and a decoder


def gate(checkpoint: Path, out: Path, mode, plan: dict) -> dict:
    """The quantized export's gate figures (kept in <out>.rejected when validation or the gate fails)."""
    from fastattn.errors import ValidationFailed
    from fastattn.exporter.pipeline import ExportOptions, export
    from fastattn.quantize import QuantOptions
    from fastattn.quantize.step import SEARCH_BUDGET, QuantizeStep
    from fastattn.runtime import schema
    from fastattn.runtime.manifest import Manifest

    step = QuantizeStep(QuantOptions(mode), budget=plan["budget"] or SEARCH_BUDGET)
    try:
        options = ExportOptions(out, threads=THREADS, force=True, repeats=plan["repeats"], quantize=step)
        manifest = export(checkpoint, options).manifest
        outcome = "exported"
    except ValidationFailed as e:
        manifest = Manifest.load(out.with_name(out.name + ".rejected"))
        outcome = "rejected: " + e.what.split(":")[0]
    q = schema.dump(manifest.quantization)  # records as plain data
    figures = q["figures"]
    return {"outcome": outcome, "gate": "passed" if q["passed"] else "failed", "data": q["data"],
            "float": figures["float"], "quantized": figures["quantized"], "kept": len(q["kept"]),
            "quantized_weights": len(q["quantized"])}  # fmt: skip


def family_row(family, ckpt: Path, work: Path, plan: dict) -> dict:
    from fastattn.exporter.pipeline import ExportOptions, export
    from fastattn.quantize import Mode
    from fastattn.runtime import load
    from tests.hf import reference

    name = family.name
    start = time.perf_counter()
    result = export(ckpt, ExportOptions(work / "out" / name, threads=THREADS, force=True, repeats=plan["repeats"]))
    row = {"export_s": round(time.perf_counter() - start, 1), "task": result.manifest.hf.task,
           "attention_nodes": len(result.manifest.attention),
           "attention": [f"{a.graph}:{a.kind}{':' + str(a.window) if a.window else ''}:{a.lowering}"
                         for a in result.manifest.attention],
           "validation_passed": result.validation.passed,
           "validation_worst_max_abs": max(o.max_abs for c in result.validation.cases for o in c.outputs)}  # fmt: skip
    if family.arch.value != "encoder":
        seq2seq = family.arch.value == "encoder_decoder"
        hf = reference.seq2seq_lm(ckpt) if seq2seq else reference.causal_lm(ckpt)
        want = reference.greedy(hf, reference.PROMPTS, plan["new"], pad=1, seq2seq=seq2seq)
        got = load(result.output).generate(reference.PROMPTS, plan["new"], stop_ids=[]).tokens
        same = sum(a == b for g, w in zip(got, want) for a, b in zip(g, w))
        row["greedy_equal_tokens"] = f"{same}/{sum(map(len, want))}"
    for mode in (Mode.INT8, Mode.INT4):
        row[mode.value] = gate(ckpt, work / "out" / f"{name}-{mode.value}", mode, plan)
    return row


def run(plan: dict, work: Path) -> dict:
    import torch

    from benchmarks.machine import describe
    from fastattn.families.hf import architectures as families
    from tests.hf import reference
    from tests.hf.checkpoints import BUILDERS

    torch.set_num_threads(1)
    chosen = [f for f in families.REGISTRY if plan["families"] is None or f.name in plan["families"]]
    rows = {}
    for family in chosen:
        start = time.perf_counter()
        ckpt = BUILDERS[family.name](work / "ckpt" / family.name)
        rows[family.name] = family_row(family, ckpt, work, plan)
        print(f"{family.name} ({time.perf_counter() - start:.0f} s)", json.dumps(rows[family.name])[:300], flush=True)
    return {"machine": describe(THREADS), "new_tokens": plan["new"], "prompts": reference.PROMPTS,
            "lowering_repeats": plan["repeats"], "rows": rows}  # fmt: skip


def cell(g: dict) -> str:
    f, q = g["float"], g["quantized"]
    if q["perplexity"] is not None:  # language models; encoders have pooled cosines
        text = f"ppl {f['perplexity']:.1f} -> {q['perplexity']:.1f}, top-1 {q['agreement']:.3f}"
    else:
        text = f"pooled cosine {q['cosine']:.5f} (least {q['cosine_min']:.5f})"
    return f"{text}; gate {g['gate']}, {g['kept']} kept; {g['outcome']}"


def markdown(result: dict) -> str:
    m, rows = result["machine"], result["rows"]
    prompts = len(result["prompts"])
    lines = [
        "# Hugging Face families on tiny random checkpoints: attention nodes, export time, greedy tokens, gates",
        "",
        f"{m['cpu']}, {THREADS} ONNX Runtime threads; " + ", ".join(f"{k} {v}" for k, v in m["versions"].items())
        + ". Checkpoints: tests/hf/checkpoints.py (2 layers, hidden 64, weights N(0, 0.2), tokenizers trained on three "
        f"stdlib files). Greedy: {result['new_tokens']} new tokens for {prompts} prompts in one padded batch, no EOS, "
        "against transformers' `generate(do_sample=False)`. Gates: held-out stdlib text tokenized by each checkpoint's "
        f"tokenizer; int8 dynamic, int4 MatMulNBits block 32. Command: `{result['command']}`.",
        "",
        "| family | task | attention nodes | export s | greedy tokens equal | int8: gate figures | int4: gate figures |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['task']} | {r['attention_nodes']} | {r['export_s']} | {r.get('greedy_equal_tokens', '-')} "
                     f"| {cell(r['int8'])} | {cell(r['int4'])} |")  # fmt: skip
    lines += ["", "Attention per node (graph:kind[:window]:kernel):", ""]
    lines += [f"- {name}: {', '.join(r['attention'])}" for name, r in rows.items()]
    lines += ["", "Random weights: the gate figures say how far quantization moves a model that knows nothing "
              "(perplexities near or above the vocabulary size), not what it costs a trained one."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_options(parser)
    parser.add_argument("--families", type=lambda s: tuple(s.split(",")), default=None,
                        help="comma-separated family names [every registered one; --smoke: bert,gpt2]")  # fmt: skip
    args = parser.parse_args(argv)
    from tests.hf.checkpoints import BUILDERS

    if args.families and (unknown := set(args.families) - set(BUILDERS)):
        parser.error(f"no tiny checkpoint for {', '.join(sorted(unknown))}; families: {', '.join(BUILDERS)}")
    out = out_dir(args)
    work = work_dir(args, out, "hf_families")
    if args.smoke:
        smoke_cache(work)
    plan = SMOKE if args.smoke else FULL
    if args.families:
        plan = {**plan, "families": args.families}
    result = run(plan, work)
    flags = (["--smoke"] if args.smoke else []) + (["--families", ",".join(args.families)] if args.families else [])
    result["command"] = command("hf_families", *flags)
    text = markdown(result)
    write(out, "hf_families", result, text)
    print(text)


if __name__ == "__main__":
    main()

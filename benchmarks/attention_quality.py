"""Quality against cost: one 6-layer byte LM trained with full, sliding, global+local and hierarchical attention.

The same model (preset ``default``'s recipe: RMSNorm, SwiGLU, rotary, GQA; 6 layers, d=128,
4/2 heads) with every layer's attention one pattern, so every variant has the same
parameters; trained on the stdlib corpus with the same data, steps, batch, sequence length
and seed (``fastattn train lm`` through the training cache, so a rerun trains nothing).
Each is scored on its held-out text at the training length (perplexity; the longest range a
query can use there is the whole 1024-token sequence) and over 8 held-out windows of 4096 tokens
(four times the training length: how each pattern carries past what it was trained on), exported for the CPU EP (lowering
measured at a 4096-token prefill) and timed by ``fastattn bench`` at prefill S = 4096 and
16384, batch 1, 2 threads.

    python -m benchmarks.attention_quality          # -> benchmarks/results/attention_quality.{json,md}
    python -m benchmarks.attention_quality --smoke --out DIR   # 2 patterns, a few steps, S = 64, 128
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from benchmarks.record import add_options, command, out_dir, smoke_cache, work_dir, write
from fastattn.bench import Plan, Settings, bench
from fastattn.bench.plan import default_threads
from fastattn.bench.records import BenchResult
from fastattn.bench.table import about, markdown
from fastattn.exporter.lowering.measure import ShapeCase
from fastattn.exporter.pipeline import ExportOptions, export
from fastattn.models import checkpoint, preset
from fastattn.models.config import parse_patterns
from fastattn.runtime.manifest import Manifest
from fastattn.targets import Target
from fastattn.train.cache import trained

BASE = preset("default").replace(name="quality-6x128", d_model=128, num_heads=4, kv_heads=2, ffn_dim=384,
                                 decoder_layers=parse_patterns("full") * 6)  # fmt: skip
PATTERNS = ("full", "sliding:64", "global_local:8:64", "hierarchical:32", "hierarchical:64")
TRAINING = {"steps": 300, "batch": 8, "seq": 1024}
SEQUENCES = (4096, 16384)
LONG = {"seq": 4096, "windows": 8}  # held-out perplexity beyond the training length (4x), PyTorch
PROFILE = (ShapeCase("prefill", 1, 4096), ShapeCase("decode", 1, 1, past=4096))
SMOKE = {"patterns": ("sliding:16", "hierarchical:16"), "training": {"steps": 4, "batch": 2, "seq": 64},
         "sequences": (64, 128), "long": {"seq": 128, "windows": 2}, "profile": (ShapeCase("prefill", 1, 64), ShapeCase("decode", 1, 1, past=64)),
         "base": BASE.replace(name="quality-smoke", d_model=32, num_heads=4, kv_heads=2, ffn_dim=64,
                              decoder_layers=parse_patterns("full") * 2)}  # fmt: skip


def config_for(base, pattern: str):
    name = pattern.replace(":", "")
    return base.replace(name=f"{base.name}-{name}", decoder_layers=parse_patterns(pattern) * len(base.decoder_layers))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_options(parser)
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--workdir", type=Path, default=None, help="exports [build/attention-quality]")
    args = parser.parse_args(argv)
    patterns = SMOKE["patterns"] if args.smoke else PATTERNS
    training = SMOKE["training"] if args.smoke else TRAINING
    sequences = SMOKE["sequences"] if args.smoke else SEQUENCES
    profile = SMOKE["profile"] if args.smoke else PROFILE
    base = SMOKE["base"] if args.smoke else BASE
    long = SMOKE["long"] if args.smoke else LONG
    out = out_dir(args)
    workdir = args.workdir or work_dir(args, out, "attention-quality")
    if args.smoke:
        smoke_cache(workdir)
    rows, exports = [], []
    for pattern in patterns:
        config = config_for(base, pattern)
        start = time.perf_counter()
        ckpt = trained("lm", config, **training)
        payload = torch.load(ckpt, weights_only=True)
        tokenizer, _, metrics = checkpoint.extras(payload)
        far = long_perplexity(checkpoint.from_payload(payload), tokenizer, **long)
        directory = workdir / config.name
        if not (directory / "fastattn.json").exists():
            print(f"exporting {directory.name}", flush=True)
            export(ckpt, ExportOptions(directory, target=Target.CPU, threads=args.threads, force=True, profile=profile,
                                       repeats=1 if args.smoke else 10))  # fmt: skip
        exports.append(directory)
        record = json.loads(ckpt.with_suffix(".json").read_text()) if ckpt.with_suffix(".json").exists() else {}
        rows.append({"pattern": pattern, "perplexity": metrics["perplexity"], "loss": metrics["loss"],
                     "long_perplexity": far,
                     "train_seconds": record.get("seconds"), "checkpoint": str(ckpt),
                     "kernel": sorted({a.lowering for a in Manifest.load(directory).attention}),
                     "ready_seconds": round(time.perf_counter() - start, 1)})  # fmt: skip
        print(
            f"{pattern}: held-out perplexity {metrics['perplexity']:.3f}, at {long['seq']} tokens {far:.3f}", flush=True
        )
    settings = Settings(args.threads, warmup=1, repeats=2, min_time=0.0, decode_steps=2) if args.smoke else (
        Settings(args.threads, warmup=2, repeats=5, min_time=0.0, decode_steps=4))  # fmt: skip
    plan = Plan.create(exports, ["cpu"], batches=(1,), sequences=sequences, sweep=True, settings=settings)
    result = bench(plan, progress=lambda message: print(message, flush=True))
    stem = "attention_quality"
    prefill = {(r.export, r.sequence): r.prefill_ms or r.latency.p50 for r in result.rows}
    decode = {(r.export, r.sequence): r.decode_tokens_per_s for r in result.rows}
    for row, directory in zip(rows, exports, strict=True):
        row["prefill_ms"] = {s: prefill.get((directory.name, s)) for s in sequences}
        row["decode_tokens_per_s"] = {s: decode.get((directory.name, s)) for s in sequences}
    cmd = command("attention_quality", *(["--smoke"] if args.smoke else []))
    record = {"command": cmd, "config": base.to_dict(), "training": training, "long": long,
              "sequences": list(sequences), "rows": rows, "bench": result.to_dict()}  # fmt: skip
    text = report(record, result)
    write(out, stem, record, text)
    print(text)
    return 1 if result.failures else 0


def report(record: dict, result: BenchResult) -> str:
    """The markdown of a record (also from a saved JSON: ``report(r, BenchResult.from_dict(r["bench"]))``)."""
    config, training, far, rows = record["config"], record["training"], record["long"], record["rows"]
    sequences = record["sequences"]

    def at(row: dict, key: str, s: int):  # JSON turns the int keys into strings
        return row[key].get(s, row[key].get(str(s)))

    head = " | ".join(f"prefill {s} ms | decode tok/s after {s}" for s in sequences)
    lines = [
        f"| attention | held-out perplexity | perplexity at {far['seq']} | {head} | kernel |",
        "|---|---:|---:|" + "---:|---:|" * len(sequences) + "---|",
    ]
    for row in rows:
        cells = " | ".join(
            f"{_fmt(at(row, 'prefill_ms', s))} | {_fmt(at(row, 'decode_tokens_per_s', s))}" for s in sequences
        )
        kernel = "; ".join(k.replace(" | ", ", ") for k in row["kernel"])  # a cell: no "|" inside
        lines.append(f"| {row['pattern']} | {row['perplexity']:.3f} | {row['long_perplexity']:.3f} | {cells} | {kernel} |")
    return "\n".join([
        "# Quality against cost: full, sliding, global+local and hierarchical attention in one 6-layer LM",
        "",
        f"`{config['name']}`: {len(config['decoder_layers'])} layers, d={config['d_model']}, {config['num_heads']}/"
        f"{config['kv_heads']} heads, ffn {config['ffn_dim']}, byte vocabulary, every layer one pattern (equal "
        f"parameters); `fastattn train lm` {training['steps']} steps of {training['batch']} x {training['seq']} tokens, "
        "seed 0, on the stdlib corpus; perplexity on its held-out files at the training length, and over "
        f"{far['windows']} held-out windows of {far['seq']} tokens (PyTorch). Prefill and decode: "
        f"the CPU export, batch 1, `fastattn bench`. Reproduce: `{record['command']}`.",
        "",
        about(result),
        *lines,
        "",
        *_against_window(rows, sequences, far["seq"], at),
        "",
        markdown(result),
    ]) + "\n"  # fmt: skip


def _against_window(rows: list[dict], sequences, far: int, at) -> list[str]:
    """Each other pattern beside the plain sliding window: perplexity, prefill time and decode speed as ratios."""
    window = next((r for r in rows if r["pattern"].startswith("sliding:")), None)
    if window is None:
        return []
    out = [
        f"Against {window['pattern']} (ratios, same run; perplexity: lower is better, prefill: time, decode: speed):",
        "",
    ]
    for row in rows:
        if row is window:
            continue
        parts = [f"perplexity {row['perplexity'] / window['perplexity']:.2f}x",
                 f"at {far} tokens {row['long_perplexity'] / window['long_perplexity']:.2f}x"]  # fmt: skip
        for s in sequences:
            prefill, base = at(row, "prefill_ms", s), at(window, "prefill_ms", s)
            decode, base_decode = at(row, "decode_tokens_per_s", s), at(window, "decode_tokens_per_s", s)
            if prefill and base:
                parts.append(f"prefill {s} {prefill / base:.2f}x")
            if decode and base_decode:
                parts.append(f"decode after {s} {decode / base_decode:.2f}x")
        out.append(f"- {row['pattern']}: " + ", ".join(parts))
    return out


def long_perplexity(model, tokenizer: dict, seq: int, windows: int) -> float:
    """Held-out perplexity over ``windows`` windows of ``seq`` tokens (the training task's own evaluation)."""
    from fastattn.train import corpus
    from fastattn.train.tasks import make
    from fastattn.train.tokenizer import from_dict

    task = make("lm", model.config, corpus.load(), from_dict(tokenizer), seq=seq)
    return task.metrics(model, task.eval_set(windows), batch_size=1)["perplexity"]


def _fmt(x) -> str:
    return "-" if x is None else f"{x:,.1f}"


if __name__ == "__main__":
    sys.exit(main())

"""PyTorch reference attention: blocked sliding window (O(S·W)) vs full causal SDPA (O(S²)).

The reference is what fastattn validates and benchmarks against, so it must not pay for
keys a window excludes. One run, side by side, prefill of one sequence:

    python -m benchmarks.reference_kernels     # writes benchmarks/results/reference_kernels.{json,md}
    python -m benchmarks.reference_kernels --smoke --out DIR     # tiny sizes (benchmarks/record.py)
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

import torch

from benchmarks.machine import describe
from benchmarks.record import add_options, command, out_dir, write
from fastattn.attention.kernels import attend
from fastattn.attention.spec import AttentionSpec

THREADS = 2


@dataclass(frozen=True)
class Sizes:
    heads: int = 8
    head_size: int = 64
    window: int = 256
    repeats: int = 5
    sequences: tuple[int, ...] = (2048, 4096, 8192, 16384)


SMOKE = Sizes(heads=2, head_size=16, window=16, repeats=1, sequences=(64, 128))


def median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def run(sizes: Sizes) -> dict:
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    heads, window = sizes.heads, sizes.window
    rows = []
    for S in sizes.sequences:
        q, k, v = (torch.randn(1, heads, S, sizes.head_size) for _ in range(3))
        with torch.no_grad():
            sliding = median_ms(lambda: attend(q, k, v, AttentionSpec(heads, heads, True, window)), sizes.repeats)
            causal = median_ms(lambda: attend(q, k, v, AttentionSpec(heads, heads, True)), sizes.repeats)
        # 4 significant digits, not a fixed number of decimals: a smoke run's sub-0.05 ms figures stay nonzero
        rows.append({"sequence": S, "sliding_ms": float(f"{sliding:.4g}"), "full_causal_ms": float(f"{causal:.4g}"),
                     "full_over_sliding": float(f"{causal / sliding:.3g}")})  # fmt: skip
        print(rows[-1])
    return {"machine": describe(THREADS), "heads": heads, "head_size": sizes.head_size, "window": window,
            "repeats": sizes.repeats, "statistic": "median", "rows": rows}  # fmt: skip


def markdown(result: dict) -> str:
    rows = result["rows"]
    lines = [
        "# PyTorch reference kernels: sliding window vs full causal",
        "",
        f"{result['machine']['cpu']}, {THREADS} threads, torch {result['machine']['versions']['torch']}; "
        f"batch 1, {result['heads']} heads x {result['head_size']}, window {result['window']}, median of {result['repeats']}.",
        "",
        "| S | sliding (ms) | full causal (ms) | full / sliding | sliding(S) / sliding(S/2) |",
        "|---|---|---|---|---|",
    ]
    for i, r in enumerate(rows):
        growth = f"{r['sliding_ms'] / rows[i - 1]['sliding_ms']:.2f}" if i else "-"
        lines.append(f"| {r['sequence']} | {r['sliding_ms']} | {r['full_causal_ms']} | {r['full_over_sliding']} | {growth} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_options(parser)
    args = parser.parse_args(argv)
    out = out_dir(args)
    result = run(SMOKE if args.smoke else Sizes())
    result["command"] = command("reference_kernels", *(["--smoke"] if args.smoke else []))
    write(out, "reference_kernels", result, markdown(result))


if __name__ == "__main__":
    main()

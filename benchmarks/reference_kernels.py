"""PyTorch reference attention: blocked sliding window (O(S·W)) vs full causal SDPA (O(S²)).

The reference is what fastattn validates and benchmarks against, so it must not pay for
keys a window excludes. One run, side by side, prefill of one sequence:

    python benchmarks/reference_kernels.py     # writes benchmarks/results/reference_kernels.{json,md}
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch

from benchmarks.machine import describe
from fastattn.attention.kernels import attend
from fastattn.attention.spec import AttentionSpec

THREADS, HEADS, HEAD_SIZE, WINDOW, REPEATS = 2, 8, 64, 256, 5
SEQUENCES = (2048, 4096, 8192, 16384)


def median_ms(fn) -> float:
    fn()
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    rows = []
    for S in SEQUENCES:
        q, k, v = (torch.randn(1, HEADS, S, HEAD_SIZE) for _ in range(3))
        with torch.no_grad():
            sliding = median_ms(lambda: attend(q, k, v, AttentionSpec(HEADS, HEADS, True, WINDOW)))
            causal = median_ms(lambda: attend(q, k, v, AttentionSpec(HEADS, HEADS, True)))
        rows.append({"sequence": S, "sliding_ms": round(sliding, 1), "full_causal_ms": round(causal, 1),
                     "full_over_sliding": round(causal / sliding, 2)})  # fmt: skip
        print(rows[-1])
    result = {"machine": describe(THREADS), "heads": HEADS, "head_size": HEAD_SIZE, "window": WINDOW,
              "repeats": REPEATS, "statistic": "median", "rows": rows}  # fmt: skip
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "reference_kernels.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# PyTorch reference kernels: sliding window vs full causal",
        "",
        f"{result['machine']['cpu']}, {THREADS} threads, torch {result['machine']['versions']['torch']}; "
        f"batch 1, {HEADS} heads x {HEAD_SIZE}, window {WINDOW}, median of {REPEATS}.",
        "",
        "| S | sliding (ms) | full causal (ms) | full / sliding | sliding(S) / sliding(S/2) |",
        "|---|---|---|---|---|",
    ]
    for i, r in enumerate(rows):
        growth = f"{r['sliding_ms'] / rows[i - 1]['sliding_ms']:.2f}" if i else "-"
        lines.append(f"| {r['sequence']} | {r['sliding_ms']} | {r['full_causal_ms']} | {r['full_over_sliding']} | {growth} |")
    (out / "reference_kernels.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

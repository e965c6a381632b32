"""Side-by-side timing: contenders take turns in blocks, so drift hits every contender alike.

ONNX Runtime's and PyTorch's worker threads spin for a while after each run; a contender
timed right after another would compete with its spinning threads. So each contender runs
a block of back-to-back calls after a short pause, blocks alternate in order round by
round, and the result is the median over rounds of each block's median.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def block_medians(
    contenders: dict[str, Callable[[], object]], rounds: int = 5, block: int = 10, pause: float = 0.1
) -> dict[str, float]:
    """Median milliseconds per call, per contender."""
    per_round: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            fn = contenders[name]
            time.sleep(pause)
            fn()  # warm-up after the pause
            times = []
            for _ in range(block):
                start = time.perf_counter()
                fn()
                times.append((time.perf_counter() - start) * 1e3)
            per_round[name].append(statistics.median(times))
    return {name: statistics.median(values) for name, values in per_round.items()}

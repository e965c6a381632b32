"""Percentiles and summaries of timing samples.

Percentiles use linear interpolation between closest ranks (NumPy's default ``method="linear"``,
Hyndman & Fan type 7): for sorted samples ``x[0..n-1]`` the q-th percentile sits at position
``h = (n - 1) * q / 100`` and is ``x[floor h] + (h - floor h) * (x[floor h + 1] - x[floor h])``.
So p50 of an even count is the mean of the two middle samples, p0 the minimum, p100 the maximum.
With 20 samples p99 lies between the two slowest runs; ask for more repetitions for a tail
that means something.

Throughput figures derive from the median (p50), not the mean: one slow run from a page
fault or a scheduler hiccup moves the mean, not the median.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

PERCENTILE_METHOD = "linear interpolation between closest ranks (numpy.percentile method='linear')"


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``samples`` by linear interpolation (see the module doc)."""
    if len(samples) == 0:
        raise ValueError("no samples")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0..100")
    return float(np.percentile(np.asarray(samples, dtype=np.float64), q, method="linear"))


@dataclass(frozen=True)
class Summary:
    """Statistics of one set of timings, in milliseconds."""

    n: int
    mean: float
    std: float  # sample standard deviation (n - 1); 0 for one sample
    min: float
    p50: float
    p90: float
    p99: float
    max: float

    def to_dict(self) -> dict:
        return asdict(self)


def summarize(samples_ms: Sequence[float]) -> Summary:
    """Count, mean, standard deviation, min, p50, p90, p99 and max of ``samples_ms``."""
    if len(samples_ms) == 0:
        raise ValueError("no samples")
    x = np.asarray(samples_ms, dtype=np.float64)
    std = float(x.std(ddof=1)) if x.size > 1 else 0.0
    p50, p90, p99 = (float(v) for v in np.percentile(x, [50, 90, 99], method="linear"))
    return Summary(int(x.size), float(x.mean()), std, float(x.min()), p50, p90, p99, float(x.max()))


def loglog_slope(x0: float, y0: float, x1: float, y1: float) -> float:
    """The slope of the line through two points on log-log axes: 1 = linear growth, 2 = quadratic."""
    if min(x0, y0, x1, y1) <= 0 or x0 == x1:
        raise ValueError("log-log slope needs positive values at two different x")
    return math.log(y1 / y0) / math.log(x1 / x0)

"""Percentiles against hand-computed values, summaries, and the timing block's counts."""

from __future__ import annotations

import math

import pytest

import fastattn.bench.measure as measure_module
from fastattn.bench.measure import time_rounds, timed
from fastattn.bench.plan import Settings
from fastattn.bench.stats import loglog_slope, percentile, summarize


@pytest.mark.parametrize(
    ("samples", "q", "want"),
    [
        ([1, 2, 3, 4], 50, 2.5),  # h = 1.5: halfway between 2 and 3
        ([1, 2, 3, 4], 90, 3.7),  # h = 2.7: 3 + 0.7 * (4 - 3)
        ([1, 2, 3, 4], 99, 3.97),  # h = 2.97
        ([1, 2, 3, 4], 0, 1.0),
        ([1, 2, 3, 4], 100, 4.0),
        ([50, 10, 40, 20, 30], 90, 46.0),  # unsorted input; h = 3.6: 40 + 0.6 * 10
        ([10, 20, 30, 40, 50], 99, 49.6),  # h = 3.96
        ([10, 20, 30, 40, 50], 50, 30.0),  # odd count: the middle sample
        ([7.5], 99, 7.5),
    ],
)
def test_percentile_matches_hand_computed_linear_interpolation(samples, q, want):
    assert percentile(samples, q) == pytest.approx(want, abs=1e-12)


def test_percentile_rejects_empty_and_out_of_range():
    with pytest.raises(ValueError, match="no samples"):
        percentile([], 50)
    with pytest.raises(ValueError, match="outside 0..100"):
        percentile([1.0], 101)


def test_summary_of_hand_values():
    s = summarize([4.0, 1.0, 3.0, 2.0])
    assert (s.n, s.min, s.max, s.mean) == (4, 1.0, 4.0, 2.5)
    assert s.std == pytest.approx(
        math.sqrt(5 / 3)
    )  # sample standard deviation: sum of squares 5 over n-1 = 3
    assert (s.p50, s.p90, s.p99) == pytest.approx((2.5, 3.7, 3.97))
    one = summarize([2.0])
    assert one.std == 0.0 and one.p99 == one.p50 == 2.0


def test_loglog_slope():
    assert loglog_slope(512, 10.0, 1024, 20.0) == pytest.approx(1.0)
    assert loglog_slope(512, 10.0, 1024, 40.0) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        loglog_slope(512, 0.0, 1024, 1.0)


def _counter():
    calls = []
    return calls, lambda: calls.append(1)


def test_block_counts_warmup_and_repeats():
    calls, fn = _counter()
    samples, warm = time_rounds(timed(fn), Settings(threads=1, warmup=3, repeats=7, min_time=0.0, pause=0.0))
    assert len(samples) == 7 and warm >= 3 and len(calls) == warm + 7
    assert all(s >= 0 for s in samples)
    calls.clear()
    samples, warm = time_rounds(timed(fn), Settings(threads=1, warmup=0, repeats=4, min_time=0.0, pause=0.0))
    assert warm == 0 and len(calls) == 4  # --warmup 0: none at all


class FakeClock:
    """Time that moves only when a timed call says so: the warm-up logic, tested without timing anything."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_warmup_goes_on_while_runs_still_get_faster(monkeypatch):
    """Like PyTorch eager at a new shape: a few slow first calls, each faster than the last."""
    clock = FakeClock()
    monkeypatch.setattr(measure_module, "time", clock)
    durations = iter([0.08, 0.04, 0.02] + [0.004] * 100)
    samples, warm = time_rounds(timed(lambda: clock.sleep(next(durations))),
                                Settings(threads=1, warmup=1, repeats=5, min_time=0.0, pause=0.0))  # fmt: skip
    assert warm == 5  # 80 -> 40 -> 20 -> 4 ms, each over 1.5x faster than the one before; one more at 4: steady
    assert samples == pytest.approx([4.0] * 5)


def test_block_runs_at_least_min_time(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(measure_module, "time", clock)
    call = 1 / 64  # seconds, exact in binary: the clock adds up without rounding
    samples, _ = time_rounds(timed(lambda: clock.sleep(call)), Settings(threads=1, warmup=0, repeats=2, min_time=0.125,
                                                                      pause=0.0))  # fmt: skip
    assert samples == [1000 / 64] * 8  # 0.125 s of 15.625 ms calls, then stop: more than the 2 repeats asked
    assert min(samples) >= 10


def test_block_of_rounds_warms_up_whole_rounds():
    rounds = []

    def round_(samples):
        rounds.append(samples is None)
        if samples is not None:
            samples += [1.0] * 4  # four steps per round

    settings = Settings(threads=1, warmup=5, repeats=10, min_time=0.0, pause=0.0)
    samples, warm = time_rounds(round_, settings, per_round=4)
    assert rounds[:2] == [True, True] and warm == 4 * rounds.count(True)  # ceil(5 / 4) warm-up rounds at least
    assert rounds[-3:] == [False, False, False] and len(samples) == 12  # then ceil(10 / 4) timed

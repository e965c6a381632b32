"""``fastattn bench``: latency of exports per execution provider, beside PyTorch eager, in one table.

    from fastattn.bench import Plan, Settings, bench
    result = bench(Plan.create(["out/"], ["cpu", "openvino"], batches=(1, 8), sequences=(128, 512)))
    result.save("results.json")

Modules: ``plan`` (typed configuration), ``measure`` (one configuration in this process,
torch-free), ``torch_eager`` (the PyTorch baseline), ``worker`` (the process protocol that
reaches providers in other environments), ``run`` (orchestration), ``records`` (rows and the
JSON), ``stats`` (percentiles), ``table`` and ``plot`` (output), ``machine`` (what it ran on).
This package stays importable without torch, rich or matplotlib: workers import it, so
``bench`` (the orchestrator) is imported on first use.
"""

from fastattn.bench.plan import Job, Plan, ProviderChoice, Settings
from fastattn.bench.records import BenchResult, Phase, PlacementRecord, Row, Unavailable
from fastattn.bench.stats import Summary, percentile, summarize

__all__ = [
    "BenchResult", "Job", "Phase", "PlacementRecord", "Plan", "ProviderChoice", "Row", "Settings", "Summary",
    "Unavailable", "bench", "percentile", "summarize",
]  # fmt: skip


def __getattr__(name: str):
    if name == "bench":
        from fastattn.bench.run import bench

        return bench
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

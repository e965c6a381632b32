"""What a benchmark ran on: CPU, cores, threads, versions; recorded beside every result.

The logic lives in :mod:`fastattn.bench.machine` (``fastattn bench`` records it too).
"""

from __future__ import annotations

from fastattn.bench.machine import cpu_model, describe

__all__ = ["cpu_model", "describe"]

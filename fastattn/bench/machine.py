"""What a benchmark ran on: CPU, cores, memory, threads, OS and versions; recorded beside every result.

``benchmarks/machine.py`` re-exports :func:`describe` and :func:`cpu_model` from here.
"""

from __future__ import annotations

import os
import platform

from fastattn.versions import installed

DISTRIBUTIONS = ("fastattn", "torch", "onnx", "onnxruntime", "onnxscript", "numpy", "matplotlib")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def physical_cores() -> int | None:
    """Distinct (physical id, core id) pairs in /proc/cpuinfo; None where it cannot be read."""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return None
    cores = set()
    for block in text.split("\n\n"):
        fields = dict(line.split(":", 1) for line in block.splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        if "core id" in fields:
            cores.add((fields.get("physical id", "0"), fields["core id"]))
    return len(cores) or None


def memory_gb() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def versions() -> dict[str, str]:
    """Installed versions of what shapes a measurement, in this environment (no imports)."""
    return installed(DISTRIBUTIONS)


def describe(threads: int) -> dict:
    """The machine and this environment's versions; ``threads`` is the intra-op count used."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    found = versions()
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "physical_cores": physical_cores(),
        "usable_cpus": usable,
        "memory_gb": memory_gb(),
        "threads": threads,
        "os": f"{platform.system()} {platform.release()}",
        "python": found.pop("python"),
        "versions": found,
    }

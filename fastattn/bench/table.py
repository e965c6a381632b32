"""The bench result as tables (rich, or markdown): one row per configuration, then where nodes ran.

Rows are grouped by model, batch and sequence length, so the providers (and PyTorch eager) of
one shape sit next to each other; ``vs eager`` is the eager p50 over the row's p50 at the same
model, batch and length. In a sequence sweep, ``slope`` is the log-log slope of p50 from the
previous length (1 = linear growth, 2 = quadratic).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.console import Group
from rich.table import Table
from rich.text import Text

from fastattn.bench.plan import PYTORCH
from fastattn.bench.records import BenchResult, Row
from fastattn.bench.stats import loglog_slope

MAX_NAMES = 6  # fallback nodes listed by name per graph; the JSON has all
BUSY = 0.1  # share of the CPU taken by other processes above which a result is flagged as noisy


def _num(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    if value >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}" if value < 100 else f"{value:.1f}"


def ordered(result: BenchResult) -> list[Row]:
    """Rows by model, batch, sequence, then providers in the plan's order, PyTorch last."""
    order = {name: i for i, name in enumerate(result.plan.get("providers", []))}
    order[PYTORCH] = len(order)
    models = {row.model: i for i, row in reversed(list(enumerate(result.rows)))}
    return sorted(result.rows, key=lambda r: (models[r.model], r.batch, r.sequence, order.get(r.provider, 99),
                                              r.precision, r.export))  # fmt: skip


def slopes(rows: list[Row]) -> dict[tuple, float]:
    """Row key -> log-log slope of p50 from the row of the next shorter length of the same series."""
    series: dict[tuple, list[Row]] = {}
    for row in rows:
        series.setdefault((row.export, row.provider, row.precision, row.batch), []).append(row)
    out = {}
    for members in series.values():
        members.sort(key=lambda r: r.sequence)
        for a, b in zip(members, members[1:], strict=False):
            out[b.key()] = loglog_slope(a.sequence, a.latency.p50, b.sequence, b.latency.p50)
    return out


@dataclass
class Grid:
    """A table as text cells: rendered with rich for the terminal, as markdown for reports."""

    title: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    sections: set[int] = field(default_factory=set)  # indices of rows that start a new group
    numbers: set[str] = field(default_factory=set)  # headers of right-aligned (numeric) columns

    def rich(self) -> Table:
        table = Table(title=self.title, title_justify="left")
        for header in self.headers:
            table.add_column(header, justify="right" if header in self.numbers else "left")
        for i, row in enumerate(self.rows):
            if i in self.sections:
                table.add_section()
            table.add_row(*row)
        return table

    def markdown(self) -> str:
        rule = "|" + "|".join("---:" if h in self.numbers else "---" for h in self.headers) + "|"
        lines = [f"**{self.title}**", "", "| " + " | ".join(self.headers) + " |", rule]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines)


def latency_grid(result: BenchResult) -> Grid:
    rows = ordered(result)
    sweep = bool(result.plan.get("sweep"))
    decoders = any(r.phase("decode") or r.phase("prefill") for r in rows)
    eager = {(r.model, r.batch, r.sequence): r.latency.p50 for r in rows if r.provider == PYTORCH}
    models = len({r.model for r in rows}) > 1
    headers = (["model"] if models else []) + ["export", "provider", "prec", "B", "S"]
    headers += ["p50", "p90", "p99", "seq/s", "tok/s", "peak MB"]
    headers += ["prefill ms", "decode tok/s"] if decoders else []
    headers += ["vs eager"] if eager else []
    headers += ["slope"] if sweep else []
    accuracy = {(a.export, a.pytorch): a.cell() for a in result.accuracy}  # --optimum: vs PyTorch on held-out text
    headers += ["accuracy vs PyTorch"] if accuracy else []
    threads = result.settings.get("threads")
    title = f"latency per execution provider (ms per call, {threads} threads)"
    grid = Grid(title, headers, numbers=set(headers) - {"model", "export", "provider", "prec", "accuracy vs PyTorch"})
    slope = slopes(rows) if sweep else {}
    previous = None
    for row in rows:
        group = (row.model, row.batch, row.sequence)
        if previous is not None and group != previous:
            grid.sections.add(len(grid.rows))
        previous = group
        lat = row.latency
        cells = [row.model] if models else []
        cells += [row.export, row.provider, row.precision, str(row.batch), str(row.sequence),
                  _num(lat.p50), _num(lat.p90), _num(lat.p99), _num(row.sequences_per_s, 1),
                  _num(row.tokens_per_s, 0), _num(row.peak_memory_mb, 1)]  # fmt: skip
        if decoders:
            cells += [_num(row.prefill_ms), _num(row.decode_tokens_per_s, 1)]
        if eager:
            base = eager.get(group)
            cells.append("-" if base is None or row.provider == PYTORCH else f"{base / lat.p50:.2f}x")
        if sweep:
            value = slope.get(row.key())
            cells.append("-" if value is None else f"{value:.2f}")
        if accuracy:
            cells.append(accuracy.get((row.export, row.provider == PYTORCH), "-"))
        grid.rows.append(cells)
    return grid


def placement_grid(result: BenchResult) -> Grid:
    headers = ["export", "provider", "graph", "ran there", "elsewhere", "fell back"]
    grid = Grid("where nodes ran (kernels in an ONNX Runtime profile)", headers, numbers={"ran there", "elsewhere"})
    for p in result.placements:
        others = sum(n for name, n in p.kernels.items() if name != p.requested)
        where = ", ".join(f"{name.removesuffix('ExecutionProvider')} {n}" for name, n in p.kernels.items()
                          if name != p.requested)  # fmt: skip
        names = ", ".join(p.fallback[:MAX_NAMES])
        if len(p.fallback) > MAX_NAMES:
            names += f", … +{len(p.fallback) - MAX_NAMES} more"
        grid.rows.append([p.export, p.provider, p.graph, str(p.ran), f"{others}" + (f" ({where})" if where else ""),
                          names or "none"])  # fmt: skip
    return grid


def busy_line(result: BenchResult, threshold: float = BUSY) -> str | None:
    """A warning when other processes took more than ``threshold`` of the CPU during some block."""
    busy = [r for r in result.rows if (r.others_cpu or 0) > threshold]
    if not busy:
        return None
    worst = max(busy, key=lambda r: r.others_cpu)
    return (
        f"note: other processes used up to {worst.others_cpu:.0%} of the machine's CPU during {len(busy)} of "
        f"{len(result.rows)} configurations (worst: {worst.export} on {worst.provider}, B={worst.batch}, "
        f"S={worst.sequence}); rerun on a quiet machine for stable numbers"
    )


def _grids(result: BenchResult) -> list[Grid]:
    return ([latency_grid(result)] if result.rows else []) + ([placement_grid(result)] if result.placements else [])


def render(result: BenchResult) -> Group:
    """Everything a terminal shows of a result: tables, unavailable providers, failures."""
    parts: list = [grid.rich() for grid in _grids(result)]
    parts += [Text(u.line(), style="yellow") for u in result.unavailable]
    parts += [Text(f"failed: {line}", style="red") for line in result.failures]
    busy = busy_line(result)
    parts += [Text(busy, style="yellow")] if busy else []
    return Group(*parts)


def markdown(result: BenchResult) -> str:
    """The same as markdown (tables, then unavailable providers and failures as list items)."""
    parts = [grid.markdown() for grid in _grids(result)]
    notes = [f"- {u.line()}" for u in result.unavailable] + [f"- failed: {line}" for line in result.failures]
    busy = busy_line(result)
    notes += [f"- {busy}"] if busy else []
    if notes:
        parts.append("\n".join(notes))
    return "\n\n".join(parts) + "\n"


def about(result: BenchResult) -> str:
    """What the numbers were measured on and how, as markdown lines (machine, versions, method)."""
    m, s = result.machine, result.settings
    lines = [
        f"- machine: {m.get('cpu')}, {m.get('physical_cores') or m.get('cores')} cores, "
        f"{m.get('memory_gb')} GB, {m.get('os')}; Python {m.get('python')}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in result.versions.items()),
    ]
    for name, env in result.environments.items():
        detail = ", ".join(f"{k} {v}" for k, v in env.items() if k not in ("python", "available"))
        lines.append(f"- {name} ran in {env.get('python')} ({detail})")
    lines.append(
        f"- settings: {s.get('threads')} intra-op threads, {s.get('warmup')} warm-up runs, at least "
        f"{s.get('repeats')} timed runs and {s.get('min_time')} s per configuration, {s.get('decode_steps')} "
        f"decode steps per round, {'one worker process per configuration' if s.get('isolate') else 'in process'}"
    )
    for key, text in s.get("method", {}).items():
        lines.append(f"- {key.replace('_', ' ')}: {text}")
    return "\n".join(lines) + "\n"

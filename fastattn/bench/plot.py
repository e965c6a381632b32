"""Latency vs sequence length, per provider and per attention kind, on log-log axes (matplotlib, Agg).

One panel per batch size: the median latency of each series (an export on a provider, or
PyTorch eager) with a band up to p90. Colour and marker follow the series; the line style
follows the attention kind (solid: full/causal, dashed: sliding window, dash-dot:
global+local), so a window model's linear growth stands apart from full attention's. With
three or more lengths, grey guides show O(S) and O(S²) from the first point. Decoders get a
second row: the median decode step (ms per token) against the cache length.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from fastattn.bench.records import BenchResult, Row
from fastattn.errors import InputError
from fastattn.files import write_atomic

STYLES = {"sliding": "--", "global_local": "-."}  # attention kind -> line style; others solid
MARKERS = "osD^vP*X"


def _style(attention: str) -> str:
    kinds = {part.split(":")[0] for part in attention.split("+")}
    return next((STYLES[k] for k in ("global_local", "sliding") if k in kinds), "-")


def _series(rows: list[Row]) -> dict[tuple, list[Row]]:
    out: dict[tuple, list[Row]] = {}
    for row in rows:
        out.setdefault((row.export, row.provider, row.precision), []).append(row)
    return {k: sorted(v, key=lambda r: r.sequence) for k, v in out.items()}


def _guides(ax, xs: list[int], y0: float) -> None:
    for power, label in ((1, "O(S)"), (2, "O(S²)")):
        ys = [y0 * (x / xs[0]) ** power for x in xs]
        ax.plot(xs, ys, color="0.6", linewidth=0.8, linestyle=":", zorder=0)
        ax.annotate(label, (xs[-1], ys[-1]), color="0.5", fontsize=8, xytext=(3, 0), textcoords="offset points")


def figure(result: BenchResult):
    """The matplotlib Figure of a result (no pyplot: no global state, no display needed)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullLocator

    batches = sorted({r.batch for r in result.rows})
    decode = any(r.phase("decode") for r in result.rows)
    rows = 2 if decode else 1
    fig = Figure(figsize=(6.4 * len(batches), 4.6 * rows), layout="constrained")
    axes = fig.subplots(rows, len(batches), squeeze=False)
    colors = {}
    for col, batch in enumerate(batches):
        series = _series([r for r in result.rows if r.batch == batch])
        panels = [(axes[0][col], "latency p50 (ms), band to p90", lambda r: r.latency, "sequence length (tokens)")]
        if decode:
            panels.append((axes[1][col], "decode step p50 (ms per token), band to p90",
                           lambda r: r.phase("decode").summary if r.phase("decode") else None,
                           "cache length before the step (tokens)"))  # fmt: skip
        for ax, ylabel, pick, xlabel in panels:
            first = None
            for i, (key, members) in enumerate(series.items()):
                points = [(r.sequence, pick(r)) for r in members if pick(r) is not None]
                if not points:
                    continue
                xs, stats = [p[0] for p in points], [p[1] for p in points]
                color = colors.setdefault(key, f"C{len(colors) % 10}")
                export, provider, precision = key
                label = f"{export} ({members[0].attention}) · {provider} · {precision}"
                ax.plot(xs, [s.p50 for s in stats], color=color, linestyle=_style(members[0].attention),
                        marker=MARKERS[i % len(MARKERS)], label=label)  # fmt: skip
                ax.fill_between(xs, [s.p50 for s in stats], [s.p90 for s in stats], color=color, alpha=0.15)
                first = first or (xs, stats[0].p50)
            if first and len(first[0]) >= 3:
                _guides(ax, first[0], first[1])
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            lengths = sorted({r.sequence for r in result.rows if r.batch == batch})
            ax.set_xticks(lengths, [str(s) for s in lengths])
            ax.xaxis.set_minor_locator(NullLocator())
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.set_title(f"batch {batch}")
            ax.grid(True, which="major", alpha=0.3)
            if ax.lines:
                ax.legend(fontsize=7)
    m = result.machine
    fig.suptitle(f"{m.get('cpu', '?')}, {result.settings.get('threads')} threads, "
                 f"fastattn {result.versions.get('fastattn', '?')}", fontsize=10)  # fmt: skip
    return fig


def plot(result: BenchResult, path: str | os.PathLike) -> Path:
    """Write the figure of ``result`` as a PNG at ``path`` (atomically)."""
    if not result.rows:
        raise InputError("nothing to plot: no configuration was measured", "see the lines above")
    buffer = io.BytesIO()
    figure(result).savefig(buffer, format="png", dpi=110)
    return write_atomic(Path(path), buffer.getvalue())

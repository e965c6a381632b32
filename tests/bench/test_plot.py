"""The plot: a PNG file, log-log axes with units, one line per series, styled by attention kind."""

from __future__ import annotations

import pytest

from fastattn.bench.plot import figure, plot
from fastattn.errors import InputError
from tests.bench.test_records import result, row


def rows():
    out = []
    for export, attention in (("full", "causal"), ("win", "sliding:256")):
        for s, t in ((512, 1.0), (1024, 2.5), (2048, 7.0)):
            out.append(
                row(export=export, sequence=s, ms=(t, t * 1.2), decode=(0.1, 0.2), attention=attention)
            )
    return out + [
        row(export="full", provider="pytorch", sequence=512, ms=(5.0,), decode=(1.0,), attention="causal")
    ]


def test_png_is_written(tmp_path):
    path = plot(result(rows()), tmp_path / "sub" / "latency.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert list(path.parent.iterdir()) == [path]  # written atomically: no temporary file left


def test_axes_lines_and_styles():
    fig = figure(result(rows()))
    latency, decode = (ax for ax in fig.axes)
    assert latency.get_xscale() == "log" and latency.get_yscale() == "log"
    assert latency.get_xlabel() == "sequence length (tokens)" and "(ms)" in latency.get_ylabel()
    assert "ms per token" in decode.get_ylabel()
    series = {line.get_label(): line for line in latency.lines if not line.get_label().startswith("_")}
    assert set(series) == {
        "full (causal) · cpu · fp32",
        "win (sliding:256) · cpu · fp32",
        "full (causal) · pytorch · fp32",
    }
    assert series["win (sliding:256) · cpu · fp32"].get_linestyle() == "--"
    assert series["full (causal) · cpu · fp32"].get_linestyle() == "-"
    assert list(series["win (sliding:256) · cpu · fp32"].get_ydata()) == pytest.approx(
        [1.1, 2.75, 7.7]
    )  # p50s
    guides = [t.get_text() for t in latency.texts]
    assert guides == ["O(S)", "O(S²)"]  # three lengths or more: growth guides


def test_nothing_to_plot(tmp_path):
    with pytest.raises(InputError, match="nothing to plot"):
        plot(result([]), tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()

"""The JSON record round-trips exactly; tables report fallbacks, eager ratios, slopes and noisy machines."""

from __future__ import annotations

import json

import pytest

from fastattn.bench.records import SCHEMA, BenchResult, Phase, PlacementRecord, Row, Unavailable
from fastattn.bench.table import busy_line, latency_grid, markdown, placement_grid

OPENVINO = "OpenVINOExecutionProvider"


def row(
    export="enc",
    provider="cpu",
    batch=1,
    sequence=128,
    ms=(2.0, 4.0),
    decode=None,
    others=None,
    attention="causal",
):
    phases = [
        Phase("prefill" if decode else "encode", "model", {"batch": batch, "sequence": sequence}, list(ms))
    ]
    if decode:
        phases.append(
            Phase("decode", "model", {"batch": batch, "sequence": 1, "past_sequence": sequence}, list(decode))
        )
    return Row("m", export, f"/x/{export}", "cpu", attention, "fp32", provider, "onnxruntime 1.32.0", batch, sequence,
               phases, 12.5, ["CPUExecutionProvider"], 2, True, others)  # fmt: skip


def result(rows, placements=(), plan=None) -> BenchResult:
    plan = plan or {"providers": ["cpu", "openvino"], "sweep": False}
    missing = [Unavailable("cuda", "no GPU", "pip install onnxruntime-gpu")]
    environments = {"cpu": {"python": "py"}}
    return BenchResult({"cpu": "test"}, {"fastattn": "0.1.0"}, environments, {"threads": 2}, plan, list(rows),
                       list(placements), missing, ["enc on x: boom"], "now")  # fmt: skip


def test_json_round_trip(tmp_path):
    original = result(
        [row(), row(provider="pytorch", ms=(8.0,), decode=(1.0, 3.0))],
        [PlacementRecord("enc", "openvino", "model", OPENVINO, {OPENVINO: 3, "CPU": 1}, ["Cast c"])],
    )
    path = original.save(tmp_path / "r.json")
    data = json.loads(path.read_text())
    assert data["schema"] == SCHEMA
    assert (
        data["rows"][0]["phases"][0]["summary"]["p50"] == 3.0
        and data["rows"][0]["derived"]["tokens_per_s"] == 128e3 / 3
    )
    assert data["rows"][1]["derived"]["decode_tokens_per_s"] == 1e3 / 2.0
    loaded = BenchResult.load(path)
    assert loaded == original and loaded.to_dict() == original.to_dict()
    with pytest.raises(ValueError, match="not a fastattn-bench/1 result"):
        BenchResult.from_dict({**data, "schema": "other/9"})


def test_fallback_is_reported_per_provider_and_graph():
    names = [f"Cast c{i}" for i in range(8)]
    cpu_ep = "CPUExecutionProvider"
    r = result([row()], [PlacementRecord("enc", "openvino", "model", OPENVINO, {OPENVINO: 6, cpu_ep: 8}, names),
                         PlacementRecord("enc", "cpu", "model", cpu_ep, {cpu_ep: 40}, [])])  # fmt: skip
    ov, cpu = placement_grid(r).rows
    assert ov == [
        "enc",
        "openvino",
        "model",
        "6",
        "8 (CPU 8)",
        "Cast c0, Cast c1, Cast c2, Cast c3, Cast c4, Cast c5, … +2 more",
    ]
    assert cpu == ["enc", "cpu", "model", "40", "0", "none"]


def test_rows_grouped_by_shape_with_eager_ratio():
    r = result([row(provider="pytorch", ms=(9.0,)), row(sequence=512), row(provider="openvino", ms=(3.0,)),
                row(ms=(3.0,))])  # fmt: skip
    grid = latency_grid(r)
    assert [(c[1], c[4]) for c in grid.rows] == [
        ("cpu", "128"),
        ("openvino", "128"),
        ("pytorch", "128"),
        ("cpu", "512"),
    ]
    assert [c[-1] for c in grid.rows] == ["3.00x", "3.00x", "-", "-"]  # eager p50 9 ms over 3 ms
    assert grid.sections == {3}


def test_sweep_gets_loglog_slopes():
    rows = [
        row(sequence=s, ms=(t,), attention="sliding:256") for s, t in ((512, 1.0), (1024, 2.0), (2048, 8.0))
    ]
    grid = latency_grid(result(rows, plan={"providers": ["cpu"], "sweep": True}))
    assert grid.headers[-1] == "slope" and [c[-1] for c in grid.rows] == ["-", "1.00", "2.00"]


def test_markdown_lists_unavailable_failures_and_a_busy_machine():
    r = result([row(others=0.02), row(sequence=512, others=0.4)])
    text = markdown(r)
    assert "| export | provider | prec | B | S | p50 |" in text
    assert (
        "- cuda: not available: no GPU. Fix: pip install onnxruntime-gpu" in text
        and "- failed: enc on x: boom" in text
    )
    assert busy_line(r) == ("note: other processes used up to 40% of the machine's CPU during 1 of 2 configurations "
                            "(worst: enc on cpu, B=1, S=512); rerun on a quiet machine for stable numbers")  # fmt: skip
    assert busy_line(result([row(others=0.05)])) is None

"""``fastattn bench`` end to end, and each bad input as one line with a non-zero exit."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from fastattn.bench.records import BenchResult
from fastattn.cli import main

QUICK = ("--repeats", "2", "--min-time", "0", "--warmup", "0", "--threads", "1")


def cli(*args):
    return CliRunner().invoke(main, ["bench", *(str(a) for a in args)], catch_exceptions=False)


def test_happy_path_with_eager_json_and_plot(decoder_export, tmp_path):
    ckpt, exported = decoder_export
    ran = cli(exported.output, "-p", "cpu", "--seq", "8,16", "--torch", ckpt, "--decode-steps", "2", "--in-process",
              "--save", tmp_path / "r.json", "--plot", tmp_path / "p.png", *QUICK)  # fmt: skip
    assert ran.exit_code == 0, ran.output
    assert "latency per execution provider (ms per call, 1 threads)" in ran.output
    assert "vs eager" in ran.output and "decode tok/s" in ran.output and "where nodes ran" in ran.output
    result = BenchResult.load(tmp_path / "r.json")
    assert [(r.provider, r.sequence) for r in result.rows] == [
        ("cpu", 8),
        ("cpu", 16),
        ("pytorch", 8),
        ("pytorch", 16),
    ]
    assert (
        result.settings["threads"] == 1
        and result.settings["isolate"] is False
        and "peak_memory" in result.settings["method"]
    )
    assert (
        result.machine["threads"] == 1
        and result.versions["onnxruntime"]
        and result.plan["torch_models"] == [str(ckpt)]
    )
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_isolated_run_with_an_unavailable_provider(decoder_export, monkeypatch, tmp_path):
    _, exported = decoder_export
    monkeypatch.delenv("FASTATTN_CUDA_PYTHON", raising=False)
    monkeypatch.chdir(tmp_path)
    ran = cli(
        exported.output,
        "-p",
        "cuda",
        "-p",
        "cpu",
        "--seq",
        "8",
        "--decode-steps",
        "0",
        "--save",
        "r.json",
        *QUICK,
    )
    assert ran.exit_code == 0, ran.output
    assert "cuda: not available: " in ran.output and "pip install onnxruntime-gpu" in ran.output
    data = json.loads((tmp_path / "r.json").read_text())
    assert [r["provider"] for r in data["rows"]] == ["cpu"] and data["settings"]["isolate"] is True
    assert data["rows"][0]["peak_memory_mb"] > 0  # measured in its own worker process


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("-p", "tpu"), "unknown execution provider 'tpu'. Fix: use one of cpu, "),
        (("--seq", "8", "--sweep-seq", "8,16"), "--seq and --sweep-seq both given"),
        (("--batch", "x"), "bad --batch 'x'"),
        (("--sweep-seq", "8"), "a sequence sweep needs at least two lengths"),
        (("--threads", "0"), "--threads': 0 is not in the range x>=1"),
    ],
)
def test_bad_options_are_one_line(decoder_export, args, message):
    _, exported = decoder_export
    ran = cli(exported.output, *args)
    assert ran.exit_code == 2 and ran.output.startswith("error: ") and message in ran.output
    assert ran.output.count("\n") == 1


def test_directory_without_manifest(tmp_path):
    ran = cli(tmp_path)
    assert ran.exit_code == 2 and ran.output.count("\n") == 1
    assert (
        f"error: {tmp_path} has no fastattn.json. Fix: pass the output directory of `fastattn export`"
        in ran.output
    )


def test_sequence_beyond_the_positions(decoder_export, tmp_path):
    _, exported = decoder_export
    manifest = json.loads((exported.output / "fastattn.json").read_text())
    manifest["max_length"] = 16
    short = tmp_path / "short"
    shutil.copytree(exported.output, short)
    (short / "fastattn.json").write_text(json.dumps(manifest))
    ran = cli(short, "--seq", "32", "--decode-steps", "0")
    assert ran.exit_code == 2 and ran.output.count("\n") == 1
    assert "sequence length 32 is longer than short takes (16 positions, max_length" in ran.output
    assert "Fix: pass sequence lengths up to 16" in ran.output

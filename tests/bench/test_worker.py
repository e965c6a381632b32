"""The worker protocol: one JSON request in, one JSON line out; and a real second environment end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import onnxruntime as ort
import pytest

from fastattn.bench import Plan, Settings, bench
from fastattn.bench.table import placement_grid
from fastattn.bench.worker import call
from fastattn.exporter.pipeline import ExportOptions, export
from fastattn.runtime.environments import PACKAGE_ROOT, python_for
from fastattn.runtime.providers import CPU
from fastattn.targets import Target

OPENVINO = "OpenVINOExecutionProvider"


def worker(*args: str, stdin: str | None = None) -> tuple[int, dict]:
    run = subprocess.run([sys.executable, "-m", "fastattn.bench.worker", *args], input=stdin, capture_output=True,
                         text=True, env={"PYTHONPATH": str(PACKAGE_ROOT)}, timeout=120)  # fmt: skip
    return run.returncode, json.loads(run.stdout.strip().splitlines()[-1])


def test_probe_from_argv():
    code, reply = worker('{"op": "probe"}')
    assert code == 0 and reply["ok"]
    assert reply["result"]["onnxruntime"] == ort.__version__ and CPU in reply["result"]["available"]


def test_errors_are_one_json_line_with_the_exit_code(tmp_path):
    job = {"directory": str(tmp_path), "label": "x", "provider": "cpu", "batch": 1, "sequence": 8,
           "settings": {"threads": 1}}  # fmt: skip
    code, reply = worker(stdin=json.dumps({"op": "measure", "job": job}))
    assert code == 2 and reply["type"] == "InputError" and "has no fastattn.json" in reply["error"]
    code, reply = worker(stdin="not json")
    assert code == 2 and reply["error"].startswith("bad request")
    code, reply = worker('{"op": "dance"}')
    assert code == 1 and reply == {"ok": False, "error": "ValueError: unknown request op 'dance'", "type": "ValueError",
                                   "exit_code": 1}  # fmt: skip


def test_in_process_call_answers_the_same():
    assert call(None, {"op": "dance"})["error"] == "ValueError: unknown request op 'dance'"
    assert call(None, {"op": "probe"})["result"]["python"] == sys.executable


@pytest.fixture(scope="module")
def openvino_export(decoder_checkpoint, tmp_path_factory):
    return export(
        decoder_checkpoint, ExportOptions(tmp_path_factory.mktemp("ov") / "dec-ov", target=Target.OPENVINO)
    )


@pytest.mark.skipif(python_for("openvino") is None, reason="no OpenVINO environment: run `make openvino-env`")
def test_openvino_runs_in_its_own_environment_beside_cpu(openvino_export):
    settings = Settings(threads=1, warmup=1, repeats=3, min_time=0.0, decode_steps=2, pause=0.0)
    result = bench(
        Plan.create([openvino_export.output], ["cpu", "openvino"], sequences=(8,), settings=settings)
    )
    assert result.failures == [] and result.unavailable == []
    cpu, ov = result.rows
    env = result.environments["openvino"]
    assert env["python"].endswith(".venv-openvino/bin/python") and OPENVINO in env["available"]
    assert ov.provider == "openvino" and ov.engine == f"onnxruntime {env['onnxruntime']}"
    assert ov.session_providers[0] == OPENVINO and cpu.session_providers == [CPU]
    assert [p.name for p in ov.phases] == ["prefill", "decode"] and len(ov.phase("decode").samples_ms) == 4
    assert ov.peak_memory_mb > 0 and cpu.peak_memory_mb > 0  # each in a fresh worker process

    on_cpu, on_ov = result.placements
    assert on_cpu.fallback == [] and on_cpu.ran == sum(on_cpu.kernels.values())
    assert on_ov.requested == OPENVINO and on_ov.ran >= 1
    elsewhere = sum(n for name, n in on_ov.kernels.items() if name != OPENVINO)
    assert elsewhere == len(on_ov.fallback)  # every kernel that ran elsewhere is named
    cells = placement_grid(result).rows[1]
    assert cells[:4] == [openvino_export.output.name, "openvino", "model", str(on_ov.ran)]
    assert cells[4].startswith(str(elsewhere)) and all(n in cells[5] for n in on_ov.fallback[:6])

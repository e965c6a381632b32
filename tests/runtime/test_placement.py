"""Node placement from an ORT profile, here and through another environment's worker."""

from __future__ import annotations

import json
import subprocess
import sys

from fastattn.runtime.environments import PACKAGE_ROOT, check_placement, python_for
from fastattn.runtime.placement import placement


def test_cpu_placement_has_no_fallback(decoder_export):
    _, result = decoder_export
    [p] = placement(result.output, "cpu")
    assert p.requested == "CPUExecutionProvider" and p.kernels["CPUExecutionProvider"] > 10
    assert p.fallback == [] and not p.fell_back


def test_worker_prints_json_and_errors_as_json(decoder_export, tmp_path):
    _, result = decoder_export
    env = {"PYTHONPATH": str(PACKAGE_ROOT)}
    run = subprocess.run([sys.executable, "-m", "fastattn.runtime.placement", str(result.output), "--provider", "cpu"],
                         capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)[0]["graph"] == "model"
    run = subprocess.run([sys.executable, "-m", "fastattn.runtime.placement", str(tmp_path), "--provider", "cpu"],
                         capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert run.returncode == 2 and "has no fastattn.json" in json.loads(run.stdout)["error"]


def test_missing_environment_is_reported_not_faked(decoder_export, monkeypatch, tmp_path):
    _, result = decoder_export
    monkeypatch.setenv("FASTATTN_CUDA_PYTHON", str(tmp_path / "no-such-python"))
    assert python_for("cuda") == tmp_path / "no-such-python"
    monkeypatch.delenv("FASTATTN_CUDA_PYTHON")
    monkeypatch.chdir(tmp_path)
    placements, why = check_placement(result.output, "cuda", result.manifest)
    assert placements == [] and "make cuda-env" in why

"""``python -m fastattn.bench.worker``: one bench request in this environment, answered as one JSON line.

An execution provider may live in another virtual environment (OpenVINO EP ships its own
onnxruntime build), so ``fastattn bench`` starts this module with that environment's Python
(``PYTHONPATH`` pointing at the fastattn checkout). It needs only onnxruntime and numpy,
except for the ``torch`` request, which only the main environment gets. Each configuration
is measured in its own worker process, so its peak memory and its threads are its own.

Protocol. The request is a JSON object, read from the first argument or else from stdin:

    {"op": "probe"}                                       -> this environment: python, onnxruntime,
                                                             numpy versions, available providers
    {"op": "measure", "job": Job.to_dict()}               -> a Row (ONNX Runtime)
    {"op": "torch", "job": Job.to_dict()}                 -> a Row (PyTorch eager; job.checkpoint set)
    {"op": "placement", "directory": D, "provider": P}    -> [Placement, ...] of every graph

The answer is the last line of stdout: ``{"ok": true, "result": ...}`` with exit code 0, or
``{"ok": false, "error": "<one line>", "type": "<exception class>", "exit_code": N}`` with exit
code N (a :class:`~fastattn.errors.FastAttnError` keeps its own; anything else is 1 and its
traceback goes to stderr). Logging goes to stderr.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import traceback
from dataclasses import asdict
from pathlib import Path

from fastattn.errors import FastAttnError
from fastattn.runtime.replies import read_reply
from fastattn.runtime.web import is_web

log = logging.getLogger(__name__)


def environment() -> dict:
    """The environment this process runs in: its Python, onnxruntime, numpy, available providers."""
    import numpy as np
    import onnxruntime as ort

    return {
        "python": sys.executable,
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
        "available": list(ort.get_available_providers()),
    }


def handle(request: dict) -> object:
    """Answer one request (see the module doc); raises on failure."""
    from fastattn.bench.plan import Job

    op = request.get("op")
    if op == "probe":
        return environment()
    if op == "measure":
        job = Job.from_dict(request["job"])
        if is_web(job.provider):  # onnxruntime-web: this worker drives Node (fastattn.runtime.web)
            from fastattn.bench.web import measure as measure_web

            return measure_web(job).to_dict()
        if job.optimum:  # one of Optimum's exports, on the inputs of the fastattn export beside it
            from fastattn.bench.optimum_measure import measure_optimum

            return measure_optimum(job).to_dict()
        from fastattn.bench.measure import measure

        return measure(job).to_dict()
    if op == "torch":
        from fastattn.bench.torch_eager import measure_torch

        return measure_torch(Job.from_dict(request["job"])).to_dict()
    if op == "placement":
        if is_web(request["provider"]):  # onnxruntime-web has no per-node profile to read here
            return []
        from fastattn.runtime.placement import placement

        return [asdict(p) for p in placement(request["directory"], request["provider"])]
    raise ValueError(f"unknown request op {op!r}")


def answer(request: dict) -> dict:
    """``handle`` wrapped into the protocol's answer object (never raises)."""
    try:
        return {"ok": True, "result": handle(request)}
    except FastAttnError as e:
        return {"ok": False, "error": str(e), "type": type(e).__name__, "exit_code": e.exit_code}
    except Exception as e:  # noqa: BLE001 - an ORT or OpenVINO failure is reported, not raised across processes
        traceback.print_exc(file=sys.stderr)
        first = (str(e).strip().splitlines() or [""])[0]
        return {"ok": False, "error": f"{type(e).__name__}: {first}", "type": type(e).__name__, "exit_code": 1}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    try:
        request = json.loads(argv[0] if argv else sys.stdin.read())
        if not isinstance(request, dict):
            raise ValueError("the request is not a JSON object")
    except ValueError as e:
        reply = {"ok": False, "error": f"bad request: {e}", "type": "ValueError", "exit_code": 2}
    else:
        reply = answer(request)
    sys.stdout.flush()
    print(json.dumps(reply), flush=True)
    return 0 if reply["ok"] else reply["exit_code"]


# ---- client ---------------------------------------------------------------------------------------


def call(python: Path | None, request: dict, timeout: float = 3600.0) -> dict:
    """Send ``request`` to a worker: a new process of ``python``, or this process when None."""
    if python is None:
        return answer(request)
    from fastattn.runtime.environments import PACKAGE_ROOT

    path = os.pathsep.join(p for p in (str(PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    try:
        run = subprocess.run(
            [str(python), "-m", "fastattn.bench.worker"], input=json.dumps(request), capture_output=True,
            text=True, env={**os.environ, "PYTHONPATH": path}, timeout=timeout,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"the worker ({python}) took longer than {timeout:g} s", "exit_code": 1}
    except OSError as e:
        return {"ok": False, "error": f"cannot start {python}: {e.strerror or e}", "exit_code": 1}
    return read_reply(run, f"the worker ({python})")


if __name__ == "__main__":
    sys.exit(main())

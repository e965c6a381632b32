"""Provider environments: an execution provider that ships its own onnxruntime build (OpenVINO EP
in ``onnxruntime-openvino``, CUDA in ``onnxruntime-gpu``) cannot share this environment, so it is
reached through the Python of another virtual environment, running a torch-free worker.

That Python is ``$FASTATTN_<PROVIDER>_PYTHON`` when set (the user names it), else
``.venv-<provider>/bin/python`` in the fastattn checkout, where ``make openvino-env`` creates it.
Nothing is ever taken from the working directory: a ``.venv-openvino`` there could be anyone's.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path

import onnxruntime as ort

import fastattn
from fastattn.runtime.manifest import Manifest
from fastattn.runtime.placement import placement
from fastattn.runtime.providers import resolve
from fastattn.runtime.records import Placement

log = logging.getLogger(__name__)

PACKAGE_ROOT = Path(fastattn.__file__).resolve().parent.parent


def python_for(provider: str) -> Path | None:
    """The Python of the environment that has ``provider``, if there is one."""
    override = os.environ.get(f"FASTATTN_{provider.upper()}_PYTHON")
    if override:
        return Path(override)
    candidate = PACKAGE_ROOT / f".venv-{provider}" / "bin" / "python"
    return candidate if candidate.is_file() else None


def here(provider: str) -> bool:
    """Whether this environment's onnxruntime has the provider."""
    try:
        name = resolve([provider])[0]
    except Exception:  # ProviderError: unknown or not installed here
        return False
    return (name if isinstance(name, str) else name[0]) in ort.get_available_providers()


def check_placement(directory: Path, provider: str, manifest: Manifest) -> tuple[list[Placement], str]:
    """Placement of an export's nodes on ``provider`` (here or in its own environment), and where it ran.

    Returns ([], reason) when no environment has the provider.
    """
    if here(provider):
        return placement(directory, provider, manifest=manifest), f"onnxruntime {ort.__version__} (this environment)"
    python = python_for(provider)
    if python is None:
        return [], f"no environment with the {provider} provider (create one with `make {provider}-env`)"
    env = {**os.environ, "PYTHONPATH": str(PACKAGE_ROOT)}
    run = subprocess.run(
        [str(python), "-m", "fastattn.runtime.placement", str(directory), "--provider", provider, "--manifest", "-"],
        input=manifest.dumps(), capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    try:
        data = json.loads(run.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        return [], f"the {provider} worker ({python}) failed: {(run.stderr.strip().splitlines() or ['no output'])[-1]}"
    if isinstance(data, dict):
        return [], f"the {provider} worker ({python}) refused: {data.get('error')}"
    placements = [Placement(**p) for p in data]
    version = placements[0].onnxruntime if placements else "?"
    return placements, f"onnxruntime {version} in {python.parent.parent}"

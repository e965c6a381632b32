"""Reaching onnxruntime-web: Node.js running ``worker.mjs`` with the pinned onnxruntime-web package.

The package lives in ``.venv-web/node_modules/onnxruntime-web`` beside the fastattn checkout or in
the working directory (``make web-env``: ``npm ci --ignore-scripts`` of this folder's
package.json + package-lock.json), or where ``$FASTATTN_ORT_WEB`` points. Requests and answers
follow the bench worker protocol (one JSON request, the answer on the last stdout line); tensors
travel as raw little-endian files in a temporary directory. Torch-free.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fastattn.errors import ProviderError
from fastattn.runtime.replies import read_reply

HERE = Path(__file__).resolve().parent
WORKER = HERE / "worker.mjs"
PACKAGE_ROOT = HERE.parents[2]
ENV_DIR = ".venv-web"
PINNED = json.loads((HERE / "package.json").read_text())["dependencies"]["onnxruntime-web"]
INSTALL = f"make web-env (npm ci --ignore-scripts of fastattn/runtime/web: onnxruntime-web {PINNED} into {ENV_DIR})"


@dataclass(frozen=True)
class WebRuntime:
    node: Path
    package: Path  # the onnxruntime-web package directory

    def call(self, request: dict, timeout: float = 3600.0) -> dict:
        """The worker's answer to ``request`` (never raises for a worker failure: ``{"ok": false, ...}``)."""
        env = {**os.environ, "FASTATTN_ORT_WEB": str(self.package)}
        try:
            run = subprocess.run([str(self.node), str(WORKER)], input=json.dumps(request), capture_output=True,
                                 text=True, env=env, timeout=timeout)  # fmt: skip
        except subprocess.TimeoutExpired:
            return {"ok": False, "error": f"the onnxruntime-web worker took longer than {timeout:g} s", "exit_code": 1}
        return read_reply(run, "the onnxruntime-web worker")


def find_package() -> Path | None:
    override = os.environ.get("FASTATTN_ORT_WEB")
    if override:
        return Path(override)
    for base in (PACKAGE_ROOT, Path.cwd()):
        candidate = base / ENV_DIR / "node_modules" / "onnxruntime-web"
        if (candidate / "package.json").is_file():
            return candidate
    return None


def runtime() -> WebRuntime:
    """Node and the onnxruntime-web package, or a ProviderError saying how to get them."""
    node = shutil.which("node")
    if node is None:
        raise ProviderError("Node.js is not on PATH (onnxruntime-web's wasm provider runs in Node here)",
                            "apt-get install nodejs, then " + INSTALL)  # fmt: skip
    package = find_package()
    if package is None:
        raise ProviderError(f"onnxruntime-web is not installed (no {ENV_DIR}/node_modules/onnxruntime-web)", INSTALL)
    return WebRuntime(Path(node), package)


def write_tensors(arrays: Mapping[str, np.ndarray], directory: Path, prefix: str) -> list[dict]:
    """Each array as a raw file in ``directory``; the worker's tensor specs."""
    specs = []
    for i, (name, array) in enumerate(arrays.items()):
        path = directory / f"{prefix}-{i}.bin"
        array = np.ascontiguousarray(array)
        dtype = "bool" if array.dtype == np.bool_ else array.dtype.name
        array.astype(array.dtype.newbyteorder("<"), copy=False).tofile(path)
        specs.append({"name": name, "dtype": dtype, "dims": list(array.shape), "file": str(path)})
    return specs

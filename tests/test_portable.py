"""An exported model runs on plain ONNX Runtime: a process that can import only onnxruntime and numpy."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np

from fastattn.exporter.validate import torch_runner
from fastattn.families.fastattn.graphs import model_graphs
from fastattn.models import load

SCRIPT = textwrap.dedent(
    """
    import sys

    class Refuse:  # fastattn, torch and the ONNX tooling must not be needed
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {"fastattn", "torch", "onnx", "onnxscript", "onnx_ir"}:
                raise ImportError(f"{name} is not allowed here")

    sys.meta_path.insert(0, Refuse())
    import numpy as np
    import onnxruntime as ort

    directory, feeds_path, out_path = sys.argv[1:]
    feeds = dict(np.load(feeds_path))
    session = ort.InferenceSession(f"{directory}/model.onnx", providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    np.savez(out_path, **dict(zip(names, session.run(None, feeds))))
    print(sorted(m for m in sys.modules if m.split(".")[0] in {"fastattn", "torch", "onnx"}))
    """
)


def test_exported_model_runs_without_fastattn_or_torch(decoder_export, tmp_path):
    ckpt, result = decoder_export
    graph = model_graphs(load(ckpt))[0]
    rng = np.random.default_rng(0)
    feeds = {
        "input_ids": rng.integers(0, 64, (2, 20)).astype(np.int64),
        "attention_mask": np.ones((2, 20), np.int64),
        **{f"past_{kind}_{i}": np.zeros((2, 2, 0, 8), np.float32) for i in range(2) for kind in ("key", "value")},
    }
    np.savez(tmp_path / "feeds.npz", **feeds)
    script = tmp_path / "app.py"
    script.write_text(SCRIPT)
    run = subprocess.run(
        [sys.executable, "-I", str(script), str(result.output), str(tmp_path / "feeds.npz"), str(tmp_path / "out.npz")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"  # nothing of fastattn, torch or onnx was imported
    got = np.load(tmp_path / "out.npz")
    want = torch_runner(graph)(feeds)
    assert set(got.files) == set(want)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], atol=1e-4, rtol=1e-4)

"""examples/node/generate.mjs: a Node.js app on onnxruntime-node from npm, knowing nothing of fastattn,
generates the same greedy tokens as fastattn.runtime from quantized (int8) and float exports."""

from __future__ import annotations

import collections
import json
import shutil
import subprocess
from pathlib import Path

import onnx
import pytest

import fastattn.runtime as rt
from fastattn.exporter.pipeline import ExportOptions, export
from fastattn.models import LayerAttention, ModelConfig, build, save
from fastattn.quantize import Mode, QuantOptions
from fastattn.quantize.gates import Gate
from fastattn.quantize.step import QuantizeStep

ROOT = Path(__file__).parents[2]
APP = ROOT / "examples" / "node"
PINNED = json.loads((APP / "package.json").read_text())["dependencies"]["onnxruntime-node"]
NETWORK = ("ENOTFOUND", "EAI_AGAIN", "ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "network", "registry")

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or shutil.which("npm") is None,
    reason="node and npm are needed for the Node.js example app (not on PATH)",
)

# Untied heads with random weights: varied greedy tokens (the trained LM answers spaces to everything).
RANDOM_UNTIED = ModelConfig(
    name="node-random-untied", vocab_size=64, d_model=32, num_heads=4, kv_heads=2, ffn_dim=64,
    tie_embeddings=False, decoder_layers=(LayerAttention(), LayerAttention()),
)  # fmt: skip
INT8 = QuantOptions(Mode.INT8)


@pytest.fixture(scope="session")
def node_app(tmp_path_factory) -> Path:
    """A copy of examples/node with its locked dependencies installed (the repo tree stays clean)."""
    app = tmp_path_factory.mktemp("node") / "app"
    app.mkdir()
    for name in ("package.json", "package-lock.json", "generate.mjs"):
        shutil.copy2(APP / name, app / name)
    # --ignore-scripts: the install script fetches GPU binaries from a host that may be unreachable;
    # the npm package already holds the CPU binaries.
    run = subprocess.run(["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=app,
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    if run.returncode != 0:
        errors = [line for line in run.stderr.splitlines() if line.startswith("npm error")] or [run.stderr]
        lines = [line for line in errors if "request to" in line or "reason" in line] or errors
        if any(word in run.stderr for word in NETWORK):
            pytest.skip(f"npm cannot install onnxruntime-node: {lines[0].strip()}")
        pytest.fail(f"npm ci failed: {run.stderr[-2000:]}")
    return app


def node_generate(app: Path, out: Path, prompt: list[int], new: int) -> dict:
    run = subprocess.run(
        ["node", "generate.mjs", str(out), "--prompt-ids", ",".join(map(str, prompt)),
         "--max-new-tokens", str(new)],
        cwd=app, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def lm_int8(trained_lm, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("node") / "lm-int8"
    return export(trained_lm, ExportOptions(out, quantize=QuantizeStep(INT8))).output


@pytest.fixture(scope="module")
def random_int8(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("node")
    ckpt = save(build(RANDOM_UNTIED, seed=2), root / "random.pt")
    lenient = Gate(max_ppl_increase=1.0, min_cosine=0.0, max_accuracy_drop=1.0)  # random weights: no gate
    return export(ckpt, ExportOptions(root / "random-int8", quantize=QuantizeStep(INT8, gate=lenient))).output


def _ops(out: Path) -> collections.Counter:
    return collections.Counter(node.op_type for node in onnx.load(str(out / "model.onnx")).graph.node)


def test_node_app_runs_the_int8_trained_lm_like_the_runtime(node_app, lm_int8):
    manifest = json.loads((lm_int8 / "fastattn.json").read_text())
    assert manifest["precision"] == "int8" and manifest["session"]["disabled_optimizers"]
    ops = _ops(lm_int8)
    assert ops["MatMulInteger"] and ops["DynamicQuantizeLinear"]  # ORT fuses them into DynamicQuantizeMatMul
    report = node_generate(node_app, lm_int8, [1, 2, 3], 32)
    assert report["onnxruntime_node"] == PINNED == "1.30.0"
    assert report["precision"] == "int8" and report["arch"] == "decoder"
    assert report["tokens"] == rt.load(lm_int8).generate([1, 2, 3], max_new_tokens=32).tokens[0]


def test_node_app_varied_tokens_int8(node_app, random_int8):
    """The trained LM's greedy tokens are all spaces; random untied weights make the check bite."""
    prompt = [3, 14, 15, 9, 26, 5, 35, 8]
    report = node_generate(node_app, random_int8, prompt, 48)
    want = rt.load(random_int8).generate(prompt, max_new_tokens=48).tokens[0]
    assert report["tokens"] == want
    assert len(set(want)) > 5


def test_node_app_encoder_decoder(node_app, seq2seq_export):
    out = seq2seq_export[1].output
    prompt = [7, 1, 12, 40, 33]
    report = node_generate(node_app, out, prompt, 32)
    assert report["arch"] == "encoder_decoder"
    assert report["tokens"] == rt.load(out).generate(prompt, max_new_tokens=32).tokens[0]


def test_node_app_bad_input(node_app, tmp_path):
    run = subprocess.run(["node", "generate.mjs", str(tmp_path), "--prompt-ids", "1,2"], cwd=node_app,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert run.returncode == 1 and "fastattn.json" in run.stderr and len(run.stderr.strip().splitlines()) == 1
    run = subprocess.run(["node", "generate.mjs", str(tmp_path), "--prompt-ids", "1,x"], cwd=node_app,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert run.returncode == 2 and "--prompt-ids" in run.stderr

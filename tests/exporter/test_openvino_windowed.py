"""OpenVINO exports of windowed and hierarchical decoders: kernels measured on OpenVINO EP in its own
environment, every attention node placed on it, tokens equal to the CPU EP's."""

from __future__ import annotations

import json
import os
import subprocess

import onnx_ir as ir
import pytest

import fastattn.runtime as rt
from fastattn.exporter.lowering.blocked_matmul import BLOCKED_MATMUL
from fastattn.exporter.lowering.choose import _fastest
from fastattn.exporter.lowering.hierarchical import HIERARCHICAL
from fastattn.exporter.lowering.measure import ShapeCase, measure
from fastattn.exporter.pipeline import ExportOptions, export
from fastattn.models import ModelConfig, build, save
from fastattn.models.config import parse_patterns
from fastattn.runtime.environments import PACKAGE_ROOT, python_for
from fastattn.targets import Target
from tests.attention.grid import Case
from tests.attention.hierarchical_grid import HCase
from tests.lowering.harness import site_and_model

OPENVINO = python_for("openvino")
pytestmark = pytest.mark.skipif(OPENVINO is None, reason="no OpenVINO environment: run `make openvino-env`")
CONFIG = ModelConfig(
    name="windowed-ov", vocab_size=64, d_model=32, num_heads=4, kv_heads=2, ffn_dim=64, tie_embeddings=False,
    decoder_layers=parse_patterns("hierarchical:8,global_local:2:8,sliding:8"),
)  # fmt: skip
PROFILE = (ShapeCase("prefill", 1, 256), ShapeCase("decode", 1, 1, past=256))
PROMPT = [3, 14, 15, 9, 26, 5, 35, 8, 9, 7, 9, 3]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("ov")
    ckpt = save(build(CONFIG, seed=5), root / "m.pt")
    return export(ckpt, ExportOptions(root / "out", target=Target.OPENVINO, profile=PROFILE, repeats=2))


def test_kernels_are_chosen_by_timing_on_openvino(exported):
    layers = exported.manifest.attention
    for layer, rule in zip(layers, ("hierarchical", "blocked-matmul", "blocked-matmul"), strict=True):
        assert "measurement" not in layer.rejected  # measured there, not a static preference
        assert set(layer.timings) == {"prefill", "decode"}
        assert set(layer.timings["prefill"]) == {"portable", rule}  # both ran on OpenVINO and matched
        assert layer.lowering in (rule, "portable (inlined)")  # one kernel for both (no If on OpenVINO)
        # the choice follows from what the manifest records (timings, spreads), whatever they are
        again = _fastest(layer.timings, layer.rejected, PROFILE, layer.spreads, switch=False)
        assert layer.lowering.split(" ")[0] == again.rule.name and again.decode_rule is None
    model = ir.load(exported.output / "model.onnx")
    ops = {(n.domain, n.op_type) for n in ir.traversal.RecursiveGraphIterator(model.graph)}
    assert {d for d, _ in ops} == {""} and ("", "If") not in ops and ("", "Attention") not in ops


@pytest.mark.parametrize("rule", [BLOCKED_MATMUL, HIERARCHICAL], ids=lambda r: r.name)
def test_rules_match_the_function_body_on_openvino(rule):
    """Through the timing worker in the OpenVINO environment: a candidate that differs is rejected."""
    case = HCase(1, 1, 1, 4, 2, 8, True, 8) if rule is HIERARCHICAL else Case(1, 1, 1, 4, 2, 8, True, window=8,
                                                                              global_tokens=2)  # fmt: skip
    site, _ = site_and_model(case, has_mask=True)
    cases = [ShapeCase("prefill", 2, 100), ShapeCase("chunk", 1, 13, past=50), ShapeCase("decode", 2, 1, past=77)]
    results = measure(site, [rule], cases, "openvino", opset=20, repeats=1, inline=True)
    assert [(m.rule, m.case) for m in results] == [(rule.name, c.name) for c in cases]
    assert all(m.ms is not None and m.max_abs_error < 1e-5 for m in results), results


def test_the_whole_graph_is_one_openvino_partition(exported):
    """Scalar constants folded (exporter/passes/fold_constants.py): no node falls back, nothing splits the graph."""
    graph = exported.manifest.placement.graphs["model"]
    assert graph.kernels == {"OpenVINOExecutionProvider": 1} and graph.fallback == []


def test_greedy_tokens_on_openvino_equal_the_cpu_eps(exported):
    want = rt.load(exported.output, provider="cpu").generate(PROMPT, 40).tokens[0]
    script = ("import json, sys, fastattn.runtime as rt; m = rt.load(sys.argv[1], provider='openvino'); "
              "print(json.dumps(m.generate(json.loads(sys.argv[2]), 40).tokens[0]))")  # fmt: skip
    run = subprocess.run([str(OPENVINO), "-c", script, str(exported.output), json.dumps(PROMPT)],
                         capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONPATH": str(PACKAGE_ROOT)})  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout.strip().splitlines()[-1]) == want

"""Exports lowered per target: what kernels the graph ends up with, and that they still validate."""

from __future__ import annotations

import onnx_ir as ir
import pytest

from fastattn.errors import InputError
from fastattn.exporter.lowering.choose import _fastest
from fastattn.exporter.lowering.measure import ShapeCase
from fastattn.exporter.pipeline import ExportOptions, export, reoptimize
from fastattn.models import LayerAttention, ModelConfig, build, save
from fastattn.models.config import NormPosition
from fastattn.runtime.environments import python_for
from fastattn.targets import Target

PROFILE = (ShapeCase("prefill", 1, 48), ShapeCase("decode", 1, 1, past=48))
ENCODER = ModelConfig(name="tiny-encoder", vocab_size=64, d_model=32, num_heads=4, kv_heads=4, ffn_dim=64,
                      encoder_layers=(LayerAttention(), LayerAttention.parse("sliding:8")))  # fmt: skip


def ops(model: ir.Model) -> set[tuple[str, str]]:
    return {(n.domain, n.op_type) for n in ir.traversal.RecursiveGraphIterator(model.graph)}


@pytest.fixture(scope="module")
def lowered(decoder_checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("targets")
    return {
        t: export(decoder_checkpoint, ExportOptions(root / t.value, target=t, profile=PROFILE, repeats=3))
        for t in (Target.CPU, Target.OPENVINO, Target.PORTABLE)
    }


def test_cpu_target_replaces_attention_with_measured_kernels(lowered):
    result = lowered[Target.CPU]
    assert result.validation.passed and result.manifest.target == "cpu"
    model = ir.load(result.output / "model.onnx")
    main_ops = {(n.domain, n.op_type) for n in model.graph}
    assert ("fastattn", "Attention") not in main_ops or all(a.lowering == "portable" for a in result.manifest.attention)
    for layer in result.manifest.attention:
        assert layer.lowering != "portable" or layer.rejected
        assert set(layer.timings) == set(layer.spreads) == {"prefill", "decode"}
        # the choice follows from what the manifest records (timings, spreads, refusals), whatever they are
        again = _fastest(layer.timings, layer.rejected, PROFILE, layer.spreads)
        assert layer.lowering == again.label
    assert result.manifest.fusions["model"]["rms_norm"] == 5  # 2 per layer + the final norm
    report = (result.output / "report.md").read_text()
    assert "## Lowering for target `cpu`" in report and "prefill:" in report


def test_openvino_target_uses_standard_ops_only(lowered):
    result = lowered[Target.OPENVINO]
    assert result.validation.passed
    model = ir.load(result.output / "model.onnx")
    domains = {d for d, _ in ops(model)}
    assert domains == {""}  # no contrib ops, and no fastattn functions: OpenVINO EP cannot read them
    assert not model.functions
    sliding, full = result.manifest.attention
    assert sliding.lowering in ("blocked-matmul", "portable (inlined)")  # whichever measured faster
    assert "blocked-matmul" in sliding.timings.get("prefill", {}) or "measurement" in sliding.rejected
    assert full.lowering == "portable (inlined)"
    assert "emits ops the openvino target" in result.manifest.attention[0].rejected["onnx-attention"]
    assert set(result.manifest.fusions["model"]) == {"layer_norm", "packed_qkv"}


@pytest.mark.skipif(python_for("openvino") is None, reason="no OpenVINO environment: run `make openvino-env`")
def test_openvino_placement_is_reported_from_its_own_environment(lowered):
    placement = lowered[Target.OPENVINO].manifest.placement
    assert ".venv-openvino" in placement.checked_with and "1.24" in placement.checked_with
    graph = placement.graphs["model"]
    assert graph.requested == "OpenVINOExecutionProvider"
    assert graph.kernels == {"OpenVINOExecutionProvider": 1} and graph.fallback == []  # one partition
    report = (lowered[Target.OPENVINO].output / "report.md").read_text()
    assert "## Placement on the target provider" in report


def test_portable_target_keeps_the_function_nodes(lowered):
    result = lowered[Target.PORTABLE]
    assert result.manifest.fusions == {} and all(a.lowering == "portable" for a in result.manifest.attention)
    assert ("fastattn", "Attention") in ops(ir.load(result.output / "model.onnx"))


def test_optimize_lowers_a_portable_export_and_validates_it(lowered, tmp_path):
    import shutil

    copy = tmp_path / "portable"
    shutil.copytree(lowered[Target.PORTABLE].output, copy)
    result = reoptimize(copy, Target.CPU, PROFILE)
    assert result.validation.passed and result.manifest.target == "cpu"
    assert "lowered from the portable export" in (copy / "report.md").read_text()
    with pytest.raises(InputError, match="already lowered for 'cpu'"):
        reoptimize(copy, Target.CPU)


def test_forced_rule_that_cannot_apply_keeps_portable_with_the_reason(tmp_path):
    ckpt = save(build(ENCODER), tmp_path / "enc.pt")
    result = export(ckpt, ExportOptions(tmp_path / "out", target=Target.CPU, only="gqa"))
    assert [a.lowering for a in result.manifest.attention] == ["portable", "portable"]
    assert all("causal" in a.rejected["gqa"] for a in result.manifest.attention)


def test_cuda_target_without_a_gpu_says_its_choice_was_not_measured(decoder_checkpoint, tmp_path):
    result = export(decoder_checkpoint, ExportOptions(tmp_path / "cuda", target=Target.CUDA))
    assert result.validation.passed  # validated on the CPU EP, which runs the same contrib ops
    for layer in result.manifest.attention:
        assert layer.lowering == "gqa" and not layer.timings  # causal: the first rule that applies
        assert "not measured" in layer.rejected["measurement"] and "CUDAExecutionProvider" in layer.rejected["measurement"]


def test_cpu_exports_ask_the_runtime_to_skip_ort_skip_layer_norm_fusion(lowered, tmp_path):
    from fastattn.runtime import load

    manifest = lowered[Target.CPU].manifest
    assert manifest.session.disabled_optimizers == ["SkipLayerNormFusion"] and "3.54 ms" in manifest.session.why
    assert load(lowered[Target.CPU].output).config.disabled_optimizers == ("SkipLayerNormFusion",)
    assert lowered[Target.OPENVINO].manifest.session.disabled_optimizers == []
    assert "SkipLayerNormFusion are turned off" in (lowered[Target.CPU].output / "report.md").read_text()
    # what the setting does in ONNX Runtime: a post-LN encoder keeps Add + LayerNormalization
    import onnxruntime as ort

    ckpt = save(build(ENCODER.replace(norm_position=NormPosition.POST), seed=0), tmp_path / "enc.pt")
    out = export(ckpt, ExportOptions(tmp_path / "enc", profile=PROFILE, repeats=2)).output
    kept = {}
    for disabled in ([], ["SkipLayerNormFusion"]):
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(tmp_path / f"opt{len(disabled)}.onnx")
        ort.InferenceSession(str(out / "model.onnx"), options, disabled_optimizers=disabled or None)
        kept[len(disabled)] = {n.op_type for n in ir.load(options.optimized_model_filepath).graph}
    assert "SkipLayerNormalization" in kept[0] and "SkipLayerNormalization" not in kept[1]

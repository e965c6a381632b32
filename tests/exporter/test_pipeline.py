"""export() end to end: the output directory, the manifest, the report, and nothing half-written."""

from __future__ import annotations

import json
import math

import onnx
import pytest

from fastattn.errors import InputError, ValidationFailed
from fastattn.exporter.pipeline import ExportOptions, export, revalidate
from fastattn.exporter.validate import Tolerance
from fastattn.runtime.manifest import Manifest


def test_output_directory_holds_model_manifest_report(decoder_export):
    _, result = decoder_export
    files = ["fastattn.json", "lowering_plan.json", "model.onnx", "report.md"]
    assert sorted(p.name for p in result.output.iterdir()) == files
    assert Manifest.load(result.output).files == [f for f in files if f != "fastattn.json"]
    manifest = Manifest.load(result.output)
    assert manifest.arch == "decoder" and manifest.config["name"] == "tiny-decoder"
    graph = manifest.graph()
    assert [s.name for s in graph.inputs][:2] == ["input_ids", "attention_mask"]
    assert graph.inputs[1].shape == ("batch", "past_sequence+sequence")
    assert (
        len(graph.cache) == 4
        and graph.cache[0].past == "past_key_0"
        and graph.cache[0].present == "present_key_0"
    )
    assert [(a.kind, a.window, a.inputs) for a in manifest.attention] == [
        ("sliding", 8, "past_mask"),
        ("causal", 0, "past_mask"),
    ]
    assert manifest.validation.passed and len(manifest.validation.cases) == 4
    assert manifest.versions["onnxruntime"] and manifest.opsets["model"][""] >= 20 and manifest.target == "cpu"
    report = (result.output / "report.md").read_text()
    assert "Validation: PASSED" in report and "decoder.layers.0.self_attn" in report
    assert "Windowed layers keep at most 7 positions" in report  # sliding:8


def test_onnx_graph_has_named_dynamic_dims(decoder_export):
    _, result = decoder_export
    model = onnx.load(result.output / "model.onnx", load_external_data=False)
    dims = {
        i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input
    }
    assert dims["input_ids"] == ["batch", "sequence"]
    assert dims["past_key_0"] == ["batch", 2, "min(past_sequence,7)", 8]  # sliding:8 keeps 7 positions
    assert dims["past_key_1"] == ["batch", 2, "past_sequence", 8]
    out = {
        o.name: [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim] for o in model.graph.output
    }
    assert out["present_value_1"] == ["batch", 2, "past_sequence+sequence", 8]


def test_seq2seq_exports_two_graphs(seq2seq_export):
    _, result = seq2seq_export
    assert {p.name for p in result.output.glob("*.onnx")} == {"encoder.onnx", "decoder.onnx"}
    manifest = result.manifest
    assert [g.name for g in manifest.graphs] == ["encoder", "decoder"]
    assert [a.kind for a in manifest.attention] == [
        "global_local",
        "sliding",
        "full",
    ]  # enc self, dec self, dec cross
    assert result.validation.passed and len(result.validation.cases) == 7


def test_revalidate_updates_manifest(decoder_export):
    ckpt, result = decoder_export
    again = revalidate(ckpt, result.output)
    assert again.validation.passed
    assert json.loads((result.output / "fastattn.json").read_text())["validation"]["passed"]


def test_failed_validation_writes_nothing_at_destination(decoder_checkpoint, tmp_path):
    out = tmp_path / "out"
    impossible = Tolerance(atol=0.0, rtol=0.0, min_cosine=1.0)
    with pytest.raises(ValidationFailed, match=r"output '\w+' of graph 'model' at .*max abs error") as info:
        export(decoder_checkpoint, ExportOptions(out, tolerance=impossible))
    assert info.value.exit_code == 3
    assert not out.exists()
    rejected = tmp_path / "out.rejected"
    assert "Validation: FAILED" in (rejected / "report.md").read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["out.rejected"]  # no staging directory left behind


def test_existing_output_needs_force(decoder_checkpoint, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    for force in (False, True):  # a directory fastattn did not write is never replaced
        with pytest.raises(InputError, match="not empty and is not a fastattn export"):
            export(decoder_checkpoint, ExportOptions(out, force=force))
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"


def test_large_weights_go_to_external_data(decoder_checkpoint, tmp_path):
    result = export(decoder_checkpoint, ExportOptions(tmp_path / "out", external_data_threshold=0))
    assert sorted(p.name for p in result.output.glob("model.onnx*")) == ["model.onnx", "model.onnx.data"]
    model = onnx.load(result.output / "model.onnx", load_external_data=False)
    big = [t for t in model.graph.initializer if 4 * math.prod(t.dims) > 1024]  # size_threshold_bytes
    assert big and all(t.data_location == onnx.TensorProto.EXTERNAL for t in big)
    assert result.validation.passed  # validated through the external data

"""The quantize step of an export: gate, report, sensitivity search, and re-quantizing an export."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from fastattn.cli import main
from fastattn.errors import InputError, ValidationFailed
from fastattn.exporter.pipeline import ExportOptions, export, requantize
from fastattn.models import LayerAttention, ModelConfig, build, save
from fastattn.quantize import Mode, QuantOptions
from fastattn.quantize.gates import Gate
from fastattn.quantize.step import QuantizeStep
from fastattn.runtime import load
from fastattn.runtime.manifest import Manifest

TINY_ENCODER = ModelConfig(
    name="tiny-encoder", vocab_size=64, d_model=32, num_heads=4, kv_heads=4, ffn_dim=64, num_labels=3,
    encoder_layers=(LayerAttention.parse("global_local:2:8"), LayerAttention()), max_positions=128,
)  # fmt: skip


@pytest.fixture(scope="module")
def float_export(decoder_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("float") / "out"
    return export(decoder_checkpoint, ExportOptions(out)).output


def test_int8_export_records_figures_sizes_and_passes(decoder_checkpoint, tmp_path):
    result = export(decoder_checkpoint, ExportOptions(tmp_path / "out", quantize=QuantizeStep(QuantOptions(Mode.INT8))))
    q = result.manifest.quantization
    assert q.passed and result.manifest.precision == "int8" and result.validation.passed
    assert set(q.figures) == {"float", "pytorch", "quantized"}
    assert q.figures["pytorch"].agreement == 1.0  # the float ONNX model is PyTorch's
    assert q.size_after < q.size_before  # tiny: the graph itself is most of the file
    assert q.ops["MatMulInteger"] == len(q.quantized) > 0
    assert "random samples" in q.data
    text = (result.output / "report.md").read_text()
    assert "## Quantization: int8, accuracy gate passed" in text and "precision **int8**" in text
    outputs = load(result.output).run(load(result.output).sample(sizes={"batch": 1, "sequence": 20, "past_sequence": 0}))
    assert np.isfinite(outputs["logits"]).all()


def test_failed_gate_searches_sensitivity_then_rejects(decoder_checkpoint, tmp_path):
    impossible = Gate(max_ppl_increase=-0.5, min_cosine=2.0, max_accuracy_drop=0.0)  # no model can pass
    step = QuantizeStep(QuantOptions(Mode.INT4), gate=impossible)
    with pytest.raises(ValidationFailed, match="int4 model fails its accuracy gate .* even with .* kept in float"):
        export(decoder_checkpoint, ExportOptions(tmp_path / "out", quantize=step))
    assert not (tmp_path / "out").exists()
    manifest = Manifest.load(tmp_path / "out.rejected")
    q = manifest.quantization
    sites = len(q.sensitivity)
    assert sites >= 5 and not q.passed
    ranked = sorted(q.sensitivity, key=q.sensitivity.get, reverse=True)
    assert q.attempts[-1].kept == ranked[: len(q.attempts) - 1]  # most sensitive first
    assert len(q.attempts) == 1 + sites // 2  # gave up after keeping half the weights


def test_trained_model_gate_uses_held_out_data_and_keeps_sensitive_weights(trained_lm, tmp_path):
    """On a trained LM: figures come from its held-out text; a gate between 'everything quantized'
    and 'nothing quantized' is met by keeping the most sensitive weights in float."""
    fp32 = export(trained_lm, ExportOptions(tmp_path / "fp32")).output
    assert (fp32 / "eval.npz").is_file() and json.loads((fp32 / "tokenizer.json").read_text())["kind"] == "bytes"
    probe = requantize(fp32, QuantizeStep(QuantOptions(Mode.INT4, block_size=16), gate=Gate(1.0, 0.0, 1.0)),
                       tmp_path / "probe").manifest.quantization  # fmt: skip
    assert "held-out data saved with the export" in probe.data
    base, got = probe.figures["float"].perplexity, probe.figures["quantized"].perplexity
    assert base < 64 and got > base  # trained (random bytes: 256), and int4 costs something
    half = Gate((got / base - 1) / 2, 0.0, 1.0)
    q = requantize(fp32, QuantizeStep(QuantOptions(Mode.INT4, block_size=16), gate=half), tmp_path / "out")
    q = q.manifest.quantization
    assert q.passed and len(q.attempts) >= 2
    kept = q.kept
    assert kept and all(k.reason.startswith("sensitive") for k in kept)
    ranked = sorted(q.sensitivity, key=q.sensitivity.get, reverse=True)
    assert {f"model:{k.node}" for k in kept} == set(ranked[: len(kept)])  # the most sensitive ones
    assert q.figures["quantized"].perplexity / base - 1 <= half.max_ppl_increase


def test_requantize_cli_and_refusals(float_export, tmp_path):
    runner = CliRunner()
    out = tmp_path / "int4"
    r = runner.invoke(main, ["quantize", str(float_export), "-q", "int4", "--block-size", "16", "-o", str(out)])
    assert r.exit_code == 0, r.output
    manifest = Manifest.load(out)
    assert manifest.precision == "int4" and manifest.quantization.settings["accuracy_level"] == 4
    again = runner.invoke(main, ["quantize", str(out), "-q", "int8"])
    assert again.exit_code == 2 and "already quantized (int4)" in again.output
    bad = runner.invoke(main, ["quantize", str(float_export), "-q", "int8", "--max-ppl-increase", "lots"])
    assert bad.exit_code == 2 and "not a number or a percentage" in bad.output
    assert Manifest.load(float_export).precision == "fp32"  # -o left the float export alone


def test_encoder_static_int8_with_calibration_and_eval_files(tmp_path):
    ckpt = save(build(TINY_ENCODER, seed=0), tmp_path / "encoder.pt")
    rng = np.random.default_rng(0)
    ids, mask = rng.integers(0, 64, (40, 40)), np.ones((40, 40), np.int64)
    for row in range(0, 40, 2):
        mask[row, : rng.integers(0, 30)] = 0  # calibrate on padded rows too, as the model will be used
    np.savez(tmp_path / "calib.npz", input_ids=ids[:32], attention_mask=mask[:32])
    np.savez(tmp_path / "eval.npz", input_ids=ids[32:], attention_mask=mask[32:], labels=ids[32:, 0] % 3)
    step = QuantizeStep(QuantOptions(Mode.INT8_STATIC), eval_data=tmp_path / "eval.npz",
                        calibration=tmp_path / "calib.npz")  # fmt: skip
    result = export(ckpt, ExportOptions(tmp_path / "out", quantize=step))
    q = result.manifest.quantization
    assert q.passed and q.calibration.endswith("calib.npz") and q.data.endswith("eval.npz")
    assert q.figures["quantized"].cosine >= 0.999 and q.figures["quantized"].accuracy is not None
    assert q.ops.get("QuantizeLinear", 0) > 0 and q.ops.get("DequantizeLinear", 0) > 0


def test_seq2seq_int8_quantizes_both_graphs(seq2seq_export, tmp_path):
    _, result = seq2seq_export
    out = requantize(result.output, QuantizeStep(QuantOptions(Mode.INT8)), tmp_path / "int8")
    q = out.manifest.quantization
    assert q.passed and {s.node for s in q.quantized}
    files = json.loads((tmp_path / "int8" / "fastattn.json").read_text())["graphs"]
    assert [g["file"] for g in files] == ["encoder.onnx", "decoder.onnx"]


def test_bad_eval_file_is_one_line(decoder_checkpoint, tmp_path):
    np.savez(tmp_path / "eval.npz", tokens=np.zeros((2, 4), np.int64))
    step = QuantizeStep(QuantOptions(Mode.INT8), eval_data=tmp_path / "eval.npz")
    with pytest.raises(InputError, match="lacks input_ids, attention_mask"):
        export(decoder_checkpoint, ExportOptions(tmp_path / "out", quantize=step))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("mode", list(Mode))
@pytest.mark.parametrize("which", ["decoder", "seq2seq"])
def test_every_mode_quantizes_decoders_and_encoder_decoders(mode, which, float_export, seq2seq_export, tmp_path):
    source = float_export if which == "decoder" else seq2seq_export[1].output
    result = requantize(source, QuantizeStep(QuantOptions(mode, block_size=16)), tmp_path / "out")
    q, manifest = result.manifest.quantization, result.manifest
    assert q.passed and q.mode == mode.value and result.validation.passed
    assert manifest.precision == {"int8-static": "int8"}.get(mode.value, mode.value)
    assert q.figures["quantized"].agreement > 0.9  # against the float graphs, on random samples
    expected_op = {Mode.INT8: "MatMulInteger", Mode.INT8_STATIC: "QuantizeLinear", Mode.INT4: "MatMulNBits",
                   Mode.FP16: "Cast"}[mode]  # fmt: skip
    assert q.ops.get(expected_op, 0) > 0


def test_sensitivity_search_says_its_budget_up_front_and_stops_there(decoder_checkpoint, tmp_path):
    impossible = Gate(max_ppl_increase=-0.5, min_cosine=2.0, max_accuracy_drop=0.0)
    lines: list[str] = []
    step = QuantizeStep(QuantOptions(Mode.INT8), gate=impossible, budget=0.0)
    with pytest.raises(ValidationFailed, match="stopped at its 0 s budget"):
        export(decoder_checkpoint, ExportOptions(tmp_path / "out", quantize=step), progress=lines.append)
    first = next(i for i, line in enumerate(lines) if line.startswith("quantizing to int8"))
    assert "bounded at 0 s" in lines[first]  # said before the first attempt, not only when the search starts
    q = Manifest.load(tmp_path / "out.rejected").quantization
    assert q.search_budget == 0.0 and not q.sensitivity
    assert "bounded at 0 s" in (tmp_path / "out.rejected" / "report.md").read_text()

"""Validation of quantized exports catches broken graphs and only those (issue 12).

On tiny models: a correct int8 and int4 export passes validation (against the float export, then against
PyTorch); each deliberately broken copy (tests/quantize/broken_graphs.py: the first or last quantized
weight zeroed, the attention mask ignored inside the graph, a NaN in an output) fails it with
ValidationFailed (exit 3), and the manifest keeps the failing figures. The bounds themselves come from
benchmarks/results/quantized_validation.md (real models; see fastattn/exporter/validate.py).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx_ir as ir
import pytest
from click.testing import CliRunner

from fastattn.cli import main
from fastattn.errors import ValidationFailed
from fastattn.exporter.pipeline import ExportOptions, export, requantize, revalidate
from fastattn.exporter.validate import TOLERANCES, compare
from fastattn.quantize import Mode, QuantOptions
from fastattn.quantize.gates import Gate
from fastattn.quantize.step import QuantizeStep
from fastattn.runtime.manifest import Manifest, Precision
from tests.hf.checkpoints import BUILDERS
from tests.quantize.broken_graphs import ignore_mask, nan_output, quantized_nodes, zero_weight

LENIENT = Gate(max_ppl_increase=1.0, min_cosine=0.0, max_accuracy_drop=1.0)  # tiny models: validation is under test
CASES = {"lm-int8": ("lm", Mode.INT8), "lm-int4": ("lm", Mode.INT4), "bert-int8": ("bert", Mode.INT8)}


@pytest.fixture(scope="module")
def models(trained_lm, tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """(model, fp32 export) of the tiny trained LM and a tiny Hugging Face BERT, exported once."""
    import torch

    root = tmp_path_factory.mktemp("bounds")
    torch.manual_seed(0)  # the builder draws random weights: the same ones every run
    bert = BUILDERS["bert"](root / "bert-checkpoint")
    found = {}
    for name, model in (("lm", trained_lm), ("bert", bert)):
        found[name] = (model, export(model, ExportOptions(root / f"{name}-fp32", repeats=1, threads=1)).output)
    return found


@pytest.fixture(scope="module")
def quantized(models, tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """(model, quantized export) per case; each export was validated against its float export on the way."""
    root = tmp_path_factory.mktemp("quantized")
    found = {}
    for case, (name, mode) in CASES.items():
        model, fp32 = models[name]
        step = QuantizeStep(QuantOptions(mode), gate=LENIENT)
        found[case] = (model, requantize(fp32, step, root / case, threads=1).output)
    return found


@pytest.mark.parametrize("case", CASES)
def test_correct_quantized_export_passes(quantized, case):
    model, out = quantized[case]
    manifest = Manifest.load(out)
    v = manifest.validation
    assert v.passed and v.precision == CASES[case][1].value.split("-")[0]
    assert v.tolerance == TOLERANCES[Precision(v.precision)] and v.tolerance.atol is None  # no element-wise bound
    assert v.tolerance.basis  # the bounds say what measurement they come from
    rows = [o.row_cosine for c in v.cases for o in c.outputs if o.row_cosine is not None]
    assert rows and min(rows) >= v.tolerance.min_row_cosine
    assert any(c.padded for c in v.cases)
    again = revalidate(model, out, threads=1).manifest.validation  # against PyTorch too
    assert again.passed and again.against != v.against


def _broken(quantized, case: str, tmp_path: Path, breaker) -> tuple[Path, Path, str]:
    model, out = quantized[case]
    copy = tmp_path / "broken"
    shutil.copytree(out, copy)
    graph = copy / Manifest.load(copy).graphs[0].file
    return model, copy, breaker(graph)


BREAKERS = {
    "zero-first": lambda graph: zero_weight(graph, 0),
    "zero-last": lambda graph: zero_weight(graph, len(quantized_nodes(ir.load(graph))) - 1),
    "mask-ignored": lambda graph: ignore_mask(graph) or "attention_mask",
}


@pytest.mark.parametrize("breaker", BREAKERS)
@pytest.mark.parametrize("case", CASES)
def test_broken_quantized_export_fails(quantized, case, breaker, tmp_path):
    model, copy, what = _broken(quantized, case, tmp_path, BREAKERS[breaker])
    with pytest.raises(ValidationFailed) as failed:
        revalidate(model, copy, threads=1)
    assert failed.value.exit_code == 3
    assert "validation failed: output" in str(failed.value) and "least row cosine" in str(failed.value)
    assert "least token cosine" in str(failed.value)
    v = Manifest.load(copy).validation  # the failing figures are kept
    assert not v.passed
    failures = [(c, o) for c in v.cases for o in c.outputs if not o.passed]
    assert failures
    tol = v.tolerance
    assert all(o.row_cosine < tol.min_row_cosine or o.token_cosine < tol.min_token_cosine or o.cosine < tol.min_cosine
               for _, o in failures)  # fmt: skip
    if breaker == "mask-ignored":  # unpadded batches are unchanged by it: only padded cases fail
        assert all(c.padded for c, _ in failures)


def test_broken_copy_of_an_export_with_its_weights_beside_the_graph(quantized, tmp_path):
    """Weights in model.onnx.data (real models' layout): a breaker reads them before it replaces the graph and
    its weights file, so the broken copy loads and fails validation, not loading."""
    model, out = quantized["lm-int8"]
    copy = tmp_path / "broken"
    shutil.copytree(out, copy)
    graph = copy / Manifest.load(copy).graphs[0].file
    ir.save(ir.load(graph), graph, external_data=f"{graph.name}.data", size_threshold_bytes=0)  # weights inline before
    assert graph.with_name(graph.name + ".data").is_file()
    zero_weight(graph, 0)
    with pytest.raises(ValidationFailed, match="least row cosine"):
        revalidate(model, copy, threads=1)


@pytest.mark.parametrize("case", ["lm-int4", "bert-int8"])
def test_nan_output_fails(quantized, case, tmp_path):
    output = "logits" if case.startswith("lm") else "last_hidden_state"
    model, copy, _ = _broken(quantized, case, tmp_path, lambda graph: nan_output(graph, output))
    with pytest.raises(ValidationFailed, match=f"output '{output}'.*NaN or Inf where the reference is finite"):
        revalidate(model, copy, threads=1)


def test_cli_validate_exits_3_on_a_broken_export(quantized, tmp_path):
    model, copy, _ = _broken(quantized, "lm-int8", tmp_path, BREAKERS["zero-last"])
    run = CliRunner().invoke(main, ["validate", str(model), str(copy), "--threads", "1"])
    assert run.exit_code == 3, run.output
    assert "least row cosine" in run.output and "Fix:" in run.output


def test_quantization_noise_passes_where_element_wise_bounds_failed():
    """Issue 12's case in miniature: one large element-wise error (max rel 0.3, beyond the old int8 rtol 0.25)
    in MiniLM-sized hidden states with cosines near 1 is noise a correct quantization makes, not a broken graph."""
    rng = np.random.default_rng(0)
    want = rng.standard_normal((2, 16, 384)).astype(np.float32)
    got = want + rng.normal(0, 0.02, want.shape).astype(np.float32)
    got[0, 3, 5] += 0.3 * np.abs(want).max()
    s = compare("last_hidden_state", got, want, TOLERANCES[Precision.INT8])
    assert s.max_rel > 0.25 and s.passed and s.row_cosine > 0.99 and s.token_cosine > 0.99
    assert not compare("last_hidden_state", got, want, TOLERANCES[Precision.FP32]).passed  # fp32 stays strict


def test_one_row_off_fails_even_when_the_whole_output_is_close():
    """A row computed wrongly (as an ignored mask makes a padded row) fails although the batch's cosine is high."""
    rng = np.random.default_rng(1)
    want = rng.standard_normal((64, 16, 32)).astype(np.float32)
    got = want.copy()
    got[5] = 0.3 * want[5] + rng.standard_normal(want[5].shape)  # row cosine ~0.29
    for precision in (Precision.INT8, Precision.INT4):
        s = compare("last_hidden_state", got, want, TOLERANCES[precision])
        assert s.cosine > TOLERANCES[precision].min_cosine and s.row_cosine < 0.4 and not s.passed


def test_a_single_nan_fails_every_precision():
    want = np.ones((2, 3, 4), np.float32)
    got = want.copy()
    got[1, 2, 3] = np.nan
    for precision in Precision:
        s = compare("logits", got, want, TOLERANCES[precision])
        assert not s.passed and "NaN" in s.note


def test_top1_and_padding_left_out():
    want = np.array([[[0.0, 1.0, 0.0], [2.0, 0.0, 0.0]], [[0.0, 0.0, 3.0], [0.0, 1.0, 0.5]]], np.float32)
    got = want.copy()
    got[1, 1] = [0.0, 0.4, 0.5]  # argmax moves at one of 4 positions
    assert compare("logits", got, want, TOLERANCES[Precision.INT8]).top1 == pytest.approx(0.75)
    valid = np.ones(want.shape, bool)
    valid[1, 1] = False  # that position is padding: left out
    s = compare("logits", got, want, TOLERANCES[Precision.INT8], valid)
    assert s.top1 == 1.0 and s.max_abs == 0.0 and s.passed
    assert compare("hidden", got, want, TOLERANCES[Precision.INT8]).top1 is None  # only logits


def test_one_token_off_fails_even_when_its_row_is_close():
    """A few tokens computed wrongly (an encoder attending to padding) fail although every row's cosine is high."""
    rng = np.random.default_rng(2)
    want = rng.standard_normal((4, 64, 32)).astype(np.float32)
    got = want.copy()
    got[1, 7] = rng.standard_normal(32)
    for precision in (Precision.INT8, Precision.INT4):
        s = compare("last_hidden_state", got, want, TOLERANCES[precision])
        assert s.row_cosine > TOLERANCES[precision].min_row_cosine and s.token_cosine < 0.3 and not s.passed

"""Task figures (perplexity, accuracy, agreement, cosine) against direct PyTorch computations,
and the evaluation forward of each architecture against the PyTorch model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastattn.errors import InputError
from fastattn.exporter.validate import torch_runner
from fastattn.families.fastattn.graphs import model_graphs
from fastattn.models import checkpoint
from fastattn.quantize.accuracy import (
    IGNORE,
    EvalSet,
    Task,
    check_eval_set,
    evaluate,
    forward,
    load_npz,
    random_eval_set,
    save_npz,
    task_of,
)
from fastattn.runtime import load


def _fixed(outputs: list[np.ndarray], valid: list[np.ndarray]):
    """A Forward that returns prepared outputs batch by batch."""
    it = iter(zip(outputs, valid))
    return lambda batch: next(it)


@pytest.mark.parametrize("batch_size", [2, 3, 8])
def test_lm_figures_match_torch_cross_entropy(batch_size):
    rng = np.random.default_rng(0)
    n, s, v = 7, 11, 13
    ref = rng.standard_normal((n, s, v)).astype(np.float32)
    got = ref + 0.3 * rng.standard_normal((n, s, v)).astype(np.float32)
    labels = rng.integers(0, v, (n, s))
    labels[:, -1] = IGNORE
    mask = np.ones((n, s), np.int64)
    mask[2, :4] = 0  # a left-padded row: its padded positions do not count
    labels[2, :4] = 5
    data = EvalSet({"input_ids": labels.clip(0), "attention_mask": mask, "labels": labels}, "test")
    starts = range(0, n, batch_size)
    fwd = {name: _fixed([a[i : i + batch_size] for i in starts], [mask[i : i + batch_size].astype(bool) for i in starts])
           for name, a in (("float", ref), ("quantized", got))}  # fmt: skip
    figures = evaluate(Task.LM, fwd, data, "float", batch_size)

    keep = mask.astype(bool) & (labels != IGNORE)
    for name, logits in (("float", ref), ("quantized", got)):
        nll = torch.nn.functional.cross_entropy(torch.from_numpy(logits[keep]).double(), torch.from_numpy(labels[keep]))
        assert figures[name].perplexity == pytest.approx(float(torch.exp(nll)), rel=1e-9)
    valid = mask.astype(bool)
    assert figures["quantized"].agreement == pytest.approx(np.mean(got[valid].argmax(-1) == ref[valid].argmax(-1)))
    a, b = got[valid].ravel().astype(np.float64), ref[valid].ravel().astype(np.float64)
    assert figures["quantized"].cosine == pytest.approx(a @ b / np.linalg.norm(a) / np.linalg.norm(b), rel=1e-9)
    assert figures["float"].cosine is None and figures["float"].agreement is None


def test_classifier_accuracy_and_agreement():
    ref = np.array([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0], [0.0, 1.0]], np.float32)
    got = np.array([[2.0, 1.0], [3.0, 0.0], [1.0, 0.0], [0.0, 1.0]], np.float32)
    labels = np.array([0, 1, 1, 1])
    data = EvalSet({"input_ids": np.zeros((4, 3), np.int64), "labels": labels}, "test")
    ones = [np.ones(4, bool)]
    figures = evaluate(Task.CLASSIFIER, {"float": _fixed([ref], ones), "int8": _fixed([got], ones)}, data, "float", 4)
    assert figures["float"].accuracy == 0.75 and figures["int8"].accuracy == 0.5
    assert figures["int8"].agreement == 0.75
    assert figures["float"].perplexity is None


def test_npz_round_trip_and_bad_files(tmp_path):
    data = EvalSet({"input_ids": np.arange(6).reshape(2, 3), "attention_mask": np.ones((2, 3), np.int64)}, "x")
    save_npz(data, tmp_path / "eval.npz")
    again = load_npz(tmp_path / "eval.npz")
    assert set(again.arrays) == {"input_ids", "attention_mask"} and len(again) == 2
    (tmp_path / "bad.npz").write_text("not a zip")
    with pytest.raises(InputError, match="cannot read evaluation data"):
        load_npz(tmp_path / "bad.npz")


def _runners(ckpt, export_dir):
    graphs = model_graphs(checkpoint.load(ckpt))
    onnx = load(export_dir, provider="cpu")
    return {g.name: torch_runner(g) for g in graphs}, {g.name: onnx.graph(g.name).run for g in graphs}, onnx.manifest


@pytest.mark.parametrize("sequence", [5, 40])  # the tiny models' windows are 8
def test_decoder_forward_matches_pytorch(decoder_export, sequence):
    ckpt, result = decoder_export
    torch_runners, onnx_runners, manifest = _runners(ckpt, result.output)
    assert task_of(manifest) is Task.LM
    data = random_eval_set(manifest, samples=5, sequence=sequence)
    data.arrays["attention_mask"][1, :3] = 0  # one left-padded row
    data.arrays["labels"][1, :3] = IGNORE
    figures = evaluate(Task.LM, {"pytorch": forward(manifest, torch_runners), "onnx": forward(manifest, onnx_runners)},
                       check_eval_set(manifest, data), "pytorch", batch_size=2)  # fmt: skip
    assert figures["onnx"].perplexity == pytest.approx(figures["pytorch"].perplexity, rel=1e-5)
    assert figures["onnx"].agreement == 1.0 and figures["onnx"].cosine > 0.99999


def test_seq2seq_forward_matches_pytorch(seq2seq_export):
    ckpt, result = seq2seq_export
    torch_runners, onnx_runners, manifest = _runners(ckpt, result.output)
    data = check_eval_set(manifest, random_eval_set(manifest, samples=3, sequence=20))
    figures = evaluate(Task.LM, {"pytorch": forward(manifest, torch_runners), "onnx": forward(manifest, onnx_runners)},
                       data, "pytorch", batch_size=2)  # fmt: skip
    assert figures["onnx"].perplexity == pytest.approx(figures["pytorch"].perplexity, rel=1e-5)
    assert figures["onnx"].agreement == 1.0


def test_eval_set_missing_inputs_is_one_clear_error(decoder_export):
    _, result = decoder_export
    data = EvalSet({"input_ids": np.zeros((2, 4), np.int64)}, "my.npz")
    with pytest.raises(InputError, match="my.npz lacks attention_mask"):
        check_eval_set(result.manifest, data)

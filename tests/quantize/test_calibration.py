"""Calibration for int8-static: from an .npz, from manifest samples, streamed, and bad input refused."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from fastattn.errors import InputError
from fastattn.quantize import (
    CalibrationMethod,
    Mode,
    QuantOptions,
    npz_batches,
    quantize_file,
    sample_batches,
)
from fastattn.quantize.calibration import FeedReader
from tests.quantize.conftest import SHAPES, cosine, run


def tokens(n: int, length: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 64, size=(n, length)).astype(np.int64)


def test_sample_batches_are_prefill_feeds(exports):
    graph = exports["cpu"].graph
    feeds = list(sample_batches(graph, {"batch": 2, "sequence": 7}, 3, seed=1))
    assert len(feeds) == 3 and {f["input_ids"].shape for f in feeds} == {(2, 7)}
    assert feeds[0]["past_key_0"].shape == (2, 2, 0, 8) and feeds[0]["attention_mask"].shape == (2, 7)
    assert not np.array_equal(feeds[0]["input_ids"], feeds[1]["input_ids"])


def test_npz_fills_empty_cache_and_mask(exports, tmp_path):
    graph = exports["cpu"].graph
    np.savez(tmp_path / "calib.npz", input_ids=tokens(5, 12).astype(np.int32), unrelated=np.zeros(3))
    batches = list(npz_batches(tmp_path / "calib.npz", graph.inputs, batch_size=2))
    assert [b["input_ids"].shape for b in batches] == [(2, 12), (2, 12), (1, 12)]
    assert batches[0]["input_ids"].dtype == np.int64 and "unrelated" not in batches[0]
    assert batches[2]["attention_mask"].tolist() == [[1] * 12]
    assert batches[0]["past_value_1"].shape == (2, 2, 0, 8)


def test_npz_missing_input_is_an_input_error(exports, tmp_path):
    graph = exports["cpu"].graph
    np.savez(tmp_path / "calib.npz", ids=tokens(4, 8))
    with pytest.raises(InputError) as info:
        next(npz_batches(tmp_path / "calib.npz", graph.inputs))
    message = str(info.value)
    assert "\n" not in message and "input(s) input_ids" in message and "(it has ids)" in message
    assert "Fix: save one array per graph input, named after it: numpy.savez(path, input_ids=...)" in message


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"input_ids": np.zeros((4, 8), np.float32)}, "is float32, the input is int64"),
        ({"input_ids": tokens(4, 8), "attention_mask": np.ones((3, 8), np.int64)}, "differ in their first"),
        ({"input_ids": tokens(4, 8)[..., None]}, "has shape"),
    ],
)
def test_npz_malformed_arrays_are_input_errors(exports, tmp_path, bad, match):
    np.savez(tmp_path / "calib.npz", **bad)
    with pytest.raises(InputError, match=match):
        list(npz_batches(tmp_path / "calib.npz", exports["cpu"].graph.inputs))


def test_npz_that_is_not_a_file(exports, tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        next(npz_batches(tmp_path / "none.npz", exports["cpu"].graph.inputs))
    (tmp_path / "bad.npz").write_text("not a zip")
    with pytest.raises(InputError, match="not a readable .npz"):
        next(npz_batches(tmp_path / "bad.npz", exports["cpu"].graph.inputs))


def test_static_from_npz(exports, tmp_path):
    export = exports["portable"]
    np.savez(tmp_path / "calib.npz", input_ids=tokens(8, 16))
    result = quantize_file(
        export.model,
        tmp_path / "q.onnx",
        QuantOptions(Mode.INT8_STATIC),
        npz_batches(tmp_path / "calib.npz", export.graph.inputs, batch_size=2),
    )
    assert result.settings["calibration_batches"] == 4 and result.settings["calibration_method"] == "minmax"
    reference, outputs = (
        run(export.model, export.graph, SHAPES["long"]),
        run(tmp_path / "q.onnx", export.graph, SHAPES["long"]),
    )
    assert cosine(outputs["logits"], reference["logits"]) >= 0.999


def test_calibration_streams_and_stops_at_the_limit(exports, tmp_path):
    """An endless feed source: only calibration_batches are drawn, one at a time."""
    export = exports["openvino"]
    drawn = []

    def endless():
        for i in itertools.count():
            drawn.append(i)
            yield next(sample_batches(export.graph, {"batch": 1, "sequence": 10}, 1, seed=i))

    options = QuantOptions(Mode.INT8_STATIC, calibration_batches=3)
    result = quantize_file(export.model, tmp_path / "q.onnx", options, endless())
    assert drawn == [0, 1, 2] and result.settings["calibration_batches"] == 3


def test_feed_reader_hands_out_one_batch_per_collect():
    reader = FeedReader(({"x": np.full(1, i)} for i in range(5)), limit=2)
    seen = []
    while reader.next_batch():
        seen.append(reader.get_next()["x"][0])
        assert reader.get_next() is None  # ends one collect_data call
    assert seen == [0, 1] and reader.count == 2


@pytest.mark.parametrize(
    "method", [CalibrationMethod.ENTROPY, CalibrationMethod.PERCENTILE], ids=lambda m: m.value
)
def test_histogram_methods(exports, tmp_path, method):
    export = exports["cpu"]
    batches = sample_batches(export.graph, {"batch": 1, "sequence": 12}, 3)
    result = quantize_file(
        export.model, tmp_path / "q.onnx", QuantOptions(Mode.INT8_STATIC, calibration_method=method), batches
    )
    assert result.settings["calibration_method"] == method.value
    reference, outputs = (
        run(export.model, export.graph, SHAPES["prefill"]),
        run(tmp_path / "q.onnx", export.graph, SHAPES["prefill"]),
    )
    assert cosine(outputs["logits"], reference["logits"]) >= 0.99


def test_static_without_data_or_with_wrong_feeds(exports, tmp_path):
    export = exports["cpu"]
    with pytest.raises(InputError, match="int8-static needs calibration data"):
        quantize_file(export.model, tmp_path / "q.onnx", QuantOptions(Mode.INT8_STATIC))
    with pytest.raises(InputError, match="no calibration batches"):
        quantize_file(export.model, tmp_path / "q.onnx", QuantOptions(Mode.INT8_STATIC), iter(()))
    with pytest.raises(InputError, match=r"batch 1 lacks input\(s\) attention_mask"):
        feeds = [{"input_ids": tokens(1, 4)}]
        quantize_file(export.model, tmp_path / "q.onnx", QuantOptions(Mode.INT8_STATIC), feeds)
    assert not any(tmp_path.iterdir())  # no output, no work directory left behind

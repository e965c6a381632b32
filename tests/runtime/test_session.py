"""The runtime against tiny hand-built ONNX graphs: numbers against NumPy, and every input error."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import fastattn.runtime as rt
from fastattn.errors import InputError, LoadError, ProviderError
from fastattn.runtime import dims
from fastattn.runtime.manifest import Fill, GraphEntry, Manifest, TensorSpec
from fastattn.runtime.session import GraphSession, check_inputs

W = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
SPECS = [
    TensorSpec("x", "float32", ("batch", "sequence", 4)),
    TensorSpec("ids", "int64", ("batch", "sequence"), Fill.TOKENS, high=10),
    TensorSpec("mask", "int64", ("batch", "past_sequence+sequence"), Fill.MASK),
    TensorSpec("past", "float32", ("batch", 1, "past_sequence", 4)),
]
OUTPUTS = [
    TensorSpec("y", "float32", ("batch", "sequence", 3)),
    TensorSpec("ids2", "int64", ("batch", "sequence")),
    TensorSpec("mask_sum", "int64", ("batch",)),
    TensorSpec("present", "float32", ("batch", 1, "past_sequence+sequence", 4)),
]
ONNX_TYPES = {"float32": TensorProto.FLOAT, "int64": TensorProto.INT64}


def _value_info(spec: TensorSpec) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(spec.name, ONNX_TYPES[spec.dtype], list(spec.shape))


def _save(model: onnx.GraphProto, path: Path) -> None:
    onnx.save(helper.make_model(model, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), path)


def decoder_graph() -> onnx.GraphProto:
    """y = x @ W, ids2 = 2 * ids, mask_sum = sum(mask, 1), present = concat(past, x[:, None], 2)."""
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["y"]),
        helper.make_node("Mul", ["ids", "two"], ["ids2"]),
        helper.make_node("ReduceSum", ["mask", "axis1"], ["mask_sum"], keepdims=0),
        helper.make_node("Unsqueeze", ["x", "axis1"], ["x4"]),
        helper.make_node("Concat", ["past", "x4"], ["present"], axis=2),
    ]
    inits = [
        numpy_helper.from_array(W, "W"),
        numpy_helper.from_array(np.array(2, np.int64), "two"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
    ]
    return helper.make_graph(
        nodes, "decoder", [_value_info(s) for s in SPECS], [_value_info(s) for s in OUTPUTS], inits
    )


@pytest.fixture
def export_dir(tmp_path: Path) -> Path:
    """An output directory with model.onnx and a hand-written manifest."""
    _save(decoder_graph(), tmp_path / "model.onnx")
    Manifest("decoder", "test", [GraphEntry("model", "model.onnx", SPECS, OUTPUTS)]).save(tmp_path)
    return tmp_path


@pytest.fixture
def model(export_dir: Path) -> rt.ExportedModel:
    return rt.load(export_dir)


def feeds(batch: int = 2, seq: int = 3, past: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "x": rng.standard_normal((batch, seq, 4)).astype(np.float32),
        "ids": rng.integers(0, 10, (batch, seq)),
        "mask": np.ones((batch, past + seq), np.int64),
        "past": rng.standard_normal((batch, 1, past, 4)).astype(np.float32),
    }


def expected(f: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {
        "y": f["x"] @ W,
        "ids2": 2 * f["ids"],
        "mask_sum": f["mask"].sum(1),
        "present": np.concatenate([f["past"], f["x"][:, None]], 2),
    }


def assert_outputs(out: dict[str, np.ndarray], f: dict[str, np.ndarray]) -> None:
    want = expected(f)
    assert sorted(out) == sorted(want)
    for name, value in want.items():
        assert out[name].shape == value.shape, name
        np.testing.assert_allclose(out[name], value, rtol=1e-6, atol=1e-6, err_msg=name)


# --- numbers -----------------------------------------------------------------------------


@pytest.mark.parametrize(("batch", "seq", "past"), [(2, 3, 2), (1, 1, 0), (3, 5, 7)])
def test_outputs_equal_numpy(model, batch, seq, past):
    f = feeds(batch, seq, past)
    assert_outputs(model.run(f), f)


def test_session_facts(model):
    session = model.graph()
    assert isinstance(session, GraphSession) and session is model.graph("model")
    assert model.providers == ["CPUExecutionProvider"] and not session.fell_back
    assert session.dims() == ["batch", "sequence", "past_sequence"]
    assert model.manifest.arch == "decoder"


def test_threads_and_optimization_level(export_dir):
    model = rt.load(export_dir, threads=1, optimization=ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    options = model.graph().session.get_session_options()
    assert options.intra_op_num_threads == 1
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    assert rt.load(export_dir).config.optimization == ort.GraphOptimizationLevel.ORT_ENABLE_ALL


def test_sample_is_seeded_and_runs(model):
    sizes = {"batch": 2, "sequence": 3, "past_sequence": 4, "unused": 9}
    a, b = model.sample(sizes=sizes, seed=1), model.sample(sizes=sizes, seed=1)
    assert {k: v.shape for k, v in a.items()} == {
        "x": (2, 3, 4), "ids": (2, 3), "mask": (2, 7), "past": (2, 1, 4, 4)
    }  # fmt: skip
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert a["ids"].dtype == np.int64 and 0 <= a["ids"].min() and a["ids"].max() < 10
    assert (a["mask"] == 1).all()
    assert_outputs(model.run(a), a)


def test_sample_needs_every_dim(model):
    with pytest.raises(
        InputError, match=r"graph 'model' needs a size for dim 'past_sequence'\. Fix: give sizes"
    ):
        model.sample(sizes={"batch": 1, "sequence": 2})
    with pytest.raises(InputError, match=r"dim sizes must be integers >= 0, got \{'batch': -1\}"):
        model.sample(sizes={"batch": -1, "sequence": 2, "past_sequence": 0})


# --- dtype policy ---------------------------------------------------------------------------


def test_int32_ids_are_not_cast_silently(model):
    f = feeds()
    f["ids"] = f["ids"].astype(np.int32)
    with pytest.raises(InputError) as e:
        model.run(f)
    assert str(e.value) == (
        "input 'ids' has dtype int32, the model expects int64. "
        "Fix: pass int64 data (x.astype(np.int64)) or run with cast=True"
    )
    assert e.value.exit_code == 2
    assert_outputs(model.run(f, cast=True), {**f, "ids": f["ids"].astype(np.int64)})


def test_float64_needs_cast(model):
    f = feeds()
    f64 = {**f, "x": f["x"].astype(np.float64)}
    with pytest.raises(InputError, match="input 'x' has dtype float64, the model expects float32"):
        model.run(f64)
    assert_outputs(model.run(f64, cast=True), f)


def test_cast_refuses_to_lose_values(model):
    with pytest.raises(
        InputError, match="input 'ids' is a float64 array whose values do not all convert exactly"
    ):
        model.run({**feeds(), "ids": np.full((2, 3), 1.5)}, cast=True)
    with pytest.raises(
        InputError, match="input 'ids' is a uint64 array whose values do not all convert exactly"
    ):
        model.run({**feeds(), "ids": np.full((2, 3), 2**63, np.uint64)}, cast=True)
    with pytest.raises(
        InputError, match="input 'x' is a float64 array whose values do not all convert exactly"
    ):
        model.run({**feeds(), "x": np.full((2, 3, 4), 1e300)}, cast=True)


def test_python_lists_convert_by_value(model):
    f = feeds(batch=1, seq=2, past=1)  # a list cannot hold a zero-size axis below others
    lists = {k: v.tolist() for k, v in f.items()}
    assert_outputs(model.run(lists), f)
    with pytest.raises(
        InputError, match="input 'ids' is a Python list whose values do not all convert exactly to int64"
    ):
        model.run({**lists, "ids": [[0.5, 1.0]]})
    with pytest.raises(InputError, match="input 'ids' is not a rectangular array"):
        model.run({**lists, "ids": [[1, 2], [3]]})
    with pytest.raises(InputError, match="input 'ids' is a Python list of <U1, not numbers"):
        model.run({**lists, "ids": [["a", "b"]]})


# --- names, ranks, dims ----------------------------------------------------------------------


def test_missing_input_lists_the_expected_ones(model):
    f = feeds()
    del f["mask"]
    with pytest.raises(InputError) as e:
        model.run(f)
    assert str(e.value) == (
        "graph 'model' is missing input 'mask'; its inputs are x, ids, mask, past. Fix: pass every input"
    )


def test_unknown_input(model):
    with pytest.raises(
        InputError, match=r"graph 'model' has no input 'input_ids'; its inputs are x, ids, mask, past"
    ):
        model.run({**feeds(), "input_ids": np.zeros((2, 3), np.int64)})


def test_wrong_rank(model):
    with pytest.raises(InputError) as e:
        model.run({**feeds(), "ids": np.zeros((2, 3, 1), np.int64)})
    assert str(e.value) == (
        "input 'ids' has rank 3 (shape (2, 3, 1)), the model expects rank 2 (batch, sequence). "
        "Fix: pass a 2-D array"
    )


def test_fixed_dim_differs(model):
    with pytest.raises(InputError) as e:
        model.run({**feeds(), "x": np.zeros((2, 3, 5), np.float32)})
    assert str(e.value) == (
        "input 'x' has shape (2, 3, 5), the model expects (batch, sequence, 4): axis 2 is 5, not 4. "
        "Fix: give axis 2 size 4"
    )


def test_dynamic_dim_takes_two_sizes(model):
    with pytest.raises(InputError) as e:
        model.run({**feeds(), "ids": np.zeros((3, 3), np.int64)})
    assert str(e.value) == (
        "dim 'batch' is 2 in input 'x' (axis 0) but 3 in input 'ids' (axis 0). "
        "Fix: give every input the same batch size"
    )


def test_sum_dim_must_add_up(model):
    with pytest.raises(InputError) as e:
        model.run({**feeds(past=2, seq=3), "mask": np.ones((2, 6), np.int64)})
    assert str(e.value) == (
        "input 'mask' axis 1 is 6, but past_sequence+sequence is 2+3 = 5. "
        "Fix: make axis 1 of 'mask' the sum past_sequence+sequence"
    )


def test_sum_dim_solves_one_unknown_part():
    specs = [
        TensorSpec("ids", "int64", ("batch", "sequence")),
        TensorSpec("mask", "int64", ("batch", "past+sequence")),
    ]
    _, sizes = check_inputs(specs, {"ids": np.zeros((2, 3), np.int64), "mask": np.zeros((2, 8), np.int64)})
    assert sizes == {"batch": 2, "sequence": 3, "past": 5}
    with pytest.raises(
        InputError, match=r"input 'mask' axis 1 is 2, less than the known part of past\+sequence \(3\)"
    ):
        check_inputs(specs, {"ids": np.zeros((2, 3), np.int64), "mask": np.zeros((2, 2), np.int64)})


# --- files and sessions ----------------------------------------------------------------------


def test_sessions_are_lazy_and_a_missing_file_says_reexport(export_dir):
    (export_dir / "model.onnx").unlink()
    model = rt.load(export_dir)  # reading the manifest needs no ONNX file
    assert model.sample(sizes={"batch": 1, "sequence": 1, "past_sequence": 0})["x"].shape == (1, 1, 4)
    with pytest.raises(
        InputError, match=r"model\.onnx is missing \(graph 'model'\)\. Fix: re-export the model"
    ):
        model.run(feeds())


def test_corrupt_onnx_file(export_dir):
    (export_dir / "model.onnx").write_bytes(b"not a protobuf")
    with pytest.raises(
        LoadError, match=r"ONNX Runtime cannot load .*model\.onnx: .*Fix: re-export the model"
    ):
        rt.load(export_dir).graph()


def test_manifest_disagrees_with_the_graph(export_dir):
    renamed = [TensorSpec("input_ids" if s.name == "ids" else s.name, s.dtype, s.shape) for s in SPECS]
    Manifest("decoder", "test", [GraphEntry("model", "model.onnx", renamed, OUTPUTS)]).save(export_dir)
    with pytest.raises(
        LoadError, match=r"model\.onnx has inputs \['x', 'ids', 'mask', 'past'\] but the manifest"
    ):
        rt.load(export_dir).graph()


def test_missing_directory_and_manifest(tmp_path):
    with pytest.raises(InputError, match="is not a directory"):
        rt.load(tmp_path / "nowhere")
    with pytest.raises(InputError, match="has no fastattn.json"):
        rt.load(tmp_path)


def test_bad_provider_and_threads_fail_at_load(export_dir):
    with pytest.raises(ProviderError, match="unknown execution provider 'gpu'"):
        rt.load(export_dir, provider="gpu")
    with pytest.raises(ProviderError, match="pip install onnxruntime-gpu"):
        rt.load(export_dir, provider="cuda")
    with pytest.raises(InputError, match="threads must be at least 1, got 0"):
        rt.load(export_dir, threads=0)


def test_fallback_to_cpu_is_recorded(export_dir, caplog):
    """A simulated GPU install resolves CUDA; the real (CPU) ORT falls back, and the session says so."""
    model = rt.load(
        export_dir, provider="cuda,cpu", available=["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    assert model.requested_providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    with caplog.at_level(logging.WARNING, logger="fastattn.runtime.session"), pytest.warns(UserWarning):
        session = model.graph()
    assert session.providers == ["CPUExecutionProvider"] and session.fell_back
    assert "runs on CPUExecutionProvider, not the requested CUDAExecutionProvider" in caplog.text
    f = feeds()
    assert_outputs(model.run(f), f)


def test_encoder_decoder_graphs(tmp_path):
    relu = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["h"])], "encoder",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_value_info("h", TensorProto.FLOAT, ["batch", 2])],
    )  # fmt: skip
    _save(relu, tmp_path / "encoder.onnx")
    enc = GraphEntry("encoder", "encoder.onnx", [TensorSpec("x", "float32", ("batch", 2))],
                     [TensorSpec("h", "float32", ("batch", 2))])  # fmt: skip
    dec = GraphEntry("decoder", "decoder.onnx", [TensorSpec("h", "float32", ("batch", 2))], [])
    Manifest("encoder_decoder", "test", [enc, dec]).save(tmp_path)
    model = rt.load(tmp_path)
    x = np.array([[-1.0, 2.0]], np.float32)
    np.testing.assert_array_equal(model.run({"x": x}, graph="encoder")["h"], [[0.0, 2.0]])
    with pytest.raises(
        InputError, match=r"this export has graphs \['encoder', 'decoder'\]\. Fix: name the graph"
    ):
        model.graph()
    with pytest.raises(InputError, match="decoder.onnx is missing"):
        model.graph("decoder")
    with pytest.raises(InputError, match="no graph named 'middle'"):
        model.run({"x": x}, graph="middle")


def test_runtime_imports_no_torch_or_onnx():
    code = (
        "import sys, fastattn.runtime; "
        "heavy = [m for m in ('torch', 'onnx', 'onnxscript', 'onnx_ir', 'rich') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[2]
    )
    assert result.returncode == 0, result.stderr


CAPPED = [
    TensorSpec("ids", "int64", ("batch", "sequence")),
    TensorSpec("mask", "int64", ("batch", "past_sequence+sequence")),
    TensorSpec("past_window", "float32", ("batch", 1, "min(past_sequence,4)", 2)),
]


def _capped(seq: int, total: int, window_past: int) -> dict[str, np.ndarray]:
    return {"ids": np.zeros((1, seq), np.int64), "mask": np.ones((1, total), np.int64),
            "past_window": np.zeros((1, 1, window_past, 2), np.float32)}  # fmt: skip


@pytest.mark.parametrize(("seq", "total", "window_past"), [(1, 3, 2), (1, 10, 4), (5, 5, 0)])
def test_capped_dim_is_the_sum_capped(seq, total, window_past):
    _, sizes = check_inputs(CAPPED, _capped(seq, total, window_past))
    assert sizes["sequence"] == seq and sizes["batch"] == 1
    assert sizes["past_sequence"] == total - seq


def test_capped_dim_longer_than_its_cap_is_one_line():
    with pytest.raises(InputError) as e:
        check_inputs(CAPPED, _capped(1, 10, 5))
    assert str(e.value) == (
        "input 'past_window' axis 2 is 5, more than the 4 of min(past_sequence,4). "
        "Fix: keep only the last 4 positions of 'past_window' (the model's present does)"
    )


def test_capped_dim_must_match_the_mask():
    with pytest.raises(InputError, match=r"axis 2 is 3, but min\(past_sequence,4\) is min\(5,4\) = 4"):
        check_inputs(CAPPED, _capped(1, 6, 3))


SUMMARIZED = [
    TensorSpec("ids", "int64", ("batch", "sequence")),
    TensorSpec("mask", "int64", ("batch", "past_sequence+sequence")),
    TensorSpec("past_hier", "float32", ("batch", 1, "summarized(past_sequence,8)", 2)),
]


@pytest.mark.parametrize(("seq", "total"), [(1, 1), (1, 9), (1, 17), (4, 40), (7, 7)])
def test_summarized_dim_is_blocks_plus_the_open_block(seq, total):
    past = total - seq
    feeds = {"ids": np.zeros((1, seq), np.int64), "mask": np.ones((1, total), np.int64),
             "past_hier": np.zeros((1, 1, past // 8 + past % 8, 2), np.float32)}  # fmt: skip
    _, sizes = check_inputs(SUMMARIZED, feeds)
    assert sizes["past_sequence"] == past
    assert dims.parse("summarized(past_sequence+sequence,8)").size({"past_sequence": past, "sequence": seq}) == (
        total // 8 + total % 8)  # fmt: skip
    assert dims.names("summarized(past_sequence,8)") == ("past_sequence",)


def test_summarized_dim_must_match_the_mask():
    feeds = {"ids": np.zeros((1, 1), np.int64), "mask": np.ones((1, 21), np.int64),
             "past_hier": np.zeros((1, 1, 20, 2), np.float32)}  # fmt: skip
    with pytest.raises(InputError) as e:
        check_inputs(SUMMARIZED, feeds)
    assert str(e.value).startswith("input 'past_hier' axis 2 is 20, but summarized(past_sequence,8) is 20//8 + 20%8 = 6")

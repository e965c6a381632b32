"""ORT-format packages: the .ort runs like the .onnx it came from (padded batches, decode through the
cache, encoder-decoders), the operator config lists exactly what the .ort holds, and bad input is one
line with nothing written."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from fastattn.errors import ExportError, InputError
from fastattn.exporter import ort_format
from fastattn.exporter.pipeline import ExportOptions, export, repackage
from fastattn.quantize import Mode, QuantOptions
from fastattn.quantize.gates import Gate
from fastattn.quantize.step import QuantizeStep
from fastattn.runtime.manifest import Manifest
from fastattn.runtime.session import GraphSession, SessionConfig
from fastattn.targets import Target

LENIENT = Gate(max_ppl_increase=1.0, min_cosine=0.0, max_accuracy_drop=1.0)  # random weights: no task gate


def _config_ops(path: Path) -> set[tuple[str, str]]:
    ops = set()
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            domain, _, names = line.split(";")
            ops |= {(domain, name) for name in names.split(",")}
    return ops


def _sessions(directory: Path, manifest: Manifest, graph: str = "model"):
    entry = manifest.graph(graph)
    config = SessionConfig(1, disabled_optimizers=tuple(manifest.session.disabled_optimizers))
    onnx_file, ort_file = directory / entry.file, directory / entry.file.replace(".onnx", ".ort")
    return GraphSession(entry, onnx_file, config=config), GraphSession(entry, ort_file, config=config)


def _greedy(session: GraphSession, manifest: Manifest, prompt: list[int], new: int) -> list[int]:
    entry = manifest.graph("model")
    specs = {s.name: s for s in entry.inputs}
    past = {p.past: np.zeros([1 if d == "batch" else 0 if isinstance(d, str) else d for d in specs[p.past].shape],
                             np.float32) for p in entry.cache}  # fmt: skip
    ids, tokens = np.array([prompt], np.int64), []
    for _ in range(new):
        mask = np.ones((1, len(prompt) + len(tokens)), np.int64)
        out = session.run({"input_ids": ids, "attention_mask": mask, **past})
        tokens.append(int(out["logits"][0, -1].argmax()))
        past = {p.past: out[p.present] for p in entry.cache}
        ids = np.array([[tokens[-1]]], np.int64)
    return tokens


@pytest.fixture(scope="module")
def int8_package(decoder_checkpoint, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ort") / "int8"
    step = QuantizeStep(QuantOptions(Mode.INT8), gate=LENIENT)
    return export(decoder_checkpoint, ExportOptions(out, quantize=step, package_ort=True)).output


def test_export_package_ort_int8(int8_package):
    manifest = Manifest.load(int8_package)
    package = manifest.ort_format
    assert {p.name for p in int8_package.iterdir()} >= {"model.onnx", "model.ort", ort_format.OPS_CONFIG,
                                                        ort_format.TYPED_CONFIG, "fastattn.json", "report.md"}
    ops = _config_ops(int8_package / ort_format.OPS_CONFIG)
    assert package.operators == len(package.operator_list) == len(ops) > 10
    # ORT's int8 fusion is baked in: a minimal build needs DynamicQuantizeMatMul, not MatMulInteger
    assert ("com.microsoft", "DynamicQuantizeMatMul") in ops and ("ai.onnx", "MatMulInteger") not in ops
    assert not any(domain == "fastattn" for domain, _ in ops)
    graph = package.graphs[0]
    assert graph.ort_nodes < graph.nodes == len(onnx.load(str(int8_package / "model.onnx")).graph.node)
    assert graph.bytes == (int8_package / "model.ort").stat().st_size == package.package_bytes
    assert package.validation.passed and len(package.validation.cases) == 4
    assert package.disabled_optimizers == ["SkipLayerNormFusion"]  # the manifest's session settings, baked in
    assert "## ORT format" in (int8_package / "report.md").read_text()


def test_ort_matches_onnx_padded_batch_and_greedy(int8_package):
    manifest = Manifest.load(int8_package)
    onnx_session, ort_session = _sessions(int8_package, manifest)
    rng = np.random.default_rng(3)
    past = {s.name: rng.standard_normal((3, 2, 0, 8)).astype(np.float32)
            for s in manifest.graph().inputs if s.name.startswith("past_")}  # fmt: skip
    mask = np.ones((3, 23), np.int64)
    mask[1, :5] = mask[2, :11] = 0  # left padding, longer than the window of 8 in row 0
    feeds = {"input_ids": rng.integers(0, 64, (3, 23)), "attention_mask": mask, **past}
    a, b = onnx_session.run(feeds), ort_session.run(feeds)
    for name in a:
        assert np.abs(a[name] - b[name]).max() <= 1e-5, name
    prompt = [5, 17, 3, 40, 9, 22, 61, 2, 8, 33, 11]
    assert _greedy(ort_session, manifest, prompt, 24) == _greedy(onnx_session, manifest, prompt, 24)


def test_package_existing_portable_inlines_functions(decoder_checkpoint, tmp_path):
    out = export(decoder_checkpoint, ExportOptions(tmp_path / "portable", target=Target.PORTABLE)).output
    before = onnx.load(str(out / "model.onnx"))
    assert any(n.domain == "fastattn" for n in before.graph.node) and before.functions
    package = repackage(out, threads=1).manifest.ort_format
    ops = _config_ops(out / ort_format.OPS_CONFIG)
    assert not any(domain == "fastattn" for domain, _ in ops) and ("ai.onnx", "Softmax") in ops
    assert package.validation.passed
    manifest = Manifest.load(out)
    onnx_session, ort_session = _sessions(out, manifest)
    prompt = list(range(3, 30))  # longer than the window
    assert _greedy(ort_session, manifest, prompt, 12) == _greedy(onnx_session, manifest, prompt, 12)
    # again: its own package is rebuilt; an export holding a file of the user's is refused, untouched
    repackage(out, threads=1)
    assert Manifest.load(out).ort_format.files() == package.files()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match=r"not a fastattn export holding only its own files \(notes.txt\)"):
        repackage(out, threads=1)
    assert (out / "notes.txt").read_text() == "mine" and not list(tmp_path.glob(".portable.fastattn-*"))


def test_encoder_decoder_two_ort_files_one_config(seq2seq_export, tmp_path):
    out = tmp_path / "s2s"
    shutil.copytree(seq2seq_export[1].output, out)
    package = repackage(out, threads=1).manifest.ort_format
    assert [g.file for g in package.graphs] == ["encoder.ort", "decoder.ort"]
    text = (out / ort_format.OPS_CONFIG).read_text()
    assert "# - encoder.ort" in text and "# - decoder.ort" in text
    manifest = Manifest.load(out)
    onnx_session, ort_session = _sessions(out, manifest, "encoder")
    feeds = onnx_session.sample({"batch": 2, "encoder_sequence": 19})
    for name, value in onnx_session.run(feeds).items():
        assert np.abs(value - ort_session.run(feeds)[name]).max() <= 1e-5


def test_refuses_custom_op_without_kernel(decoder_export, tmp_path):
    out = tmp_path / "custom"
    shutil.copytree(decoder_export[1].output, out)
    model = onnx.load(str(out / "model.onnx"))
    node = next(n for n in model.graph.node if n.op_type == "Add")
    node.domain = "mylib"
    model.opset_import.append(onnx.helper.make_opsetid("mylib", 1))
    onnx.save(model, str(out / "model.onnx"))
    files = sorted(p.name for p in out.iterdir())
    with pytest.raises(ExportError, match="mylib::Add, which has neither an ONNX Runtime kernel"):
        repackage(out)
    assert sorted(p.name for p in out.iterdir()) == files


def test_refuses_weights_over_a_flatbuffer(decoder_export, tmp_path, monkeypatch):
    out = tmp_path / "big"
    shutil.copytree(decoder_export[1].output, out)
    monkeypatch.setattr(ort_format, "FLATBUFFER_LIMIT", 1000)
    with pytest.raises(ExportError, match="at most 2 GiB"):
        repackage(out)
    assert not (out / "model.ort").exists()


def test_never_overwrites_a_file_it_did_not_write(decoder_export, tmp_path):
    out = tmp_path / "theirs"
    shutil.copytree(decoder_export[1].output, out)
    (out / "model.ort").write_text("someone else's")
    with pytest.raises(InputError, match=r"holding only its own files \(model.ort\)"):
        repackage(out)
    assert (out / "model.ort").read_text() == "someone else's"
    assert Manifest.load(out).ort_format is None and not (out / ort_format.OPS_CONFIG).exists()


def test_cli_bad_input_one_line(tmp_path):
    run = subprocess.run([sys.executable, "-m", "fastattn.cli", "package", str(tmp_path), "--ort"],
                         capture_output=True, text=True, env={**os.environ, "COLUMNS": "300"})  # fmt: skip
    assert run.returncode == 2 and "has no fastattn.json" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and not list(tmp_path.iterdir())

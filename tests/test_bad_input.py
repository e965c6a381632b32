"""Bad input, command by command: one line saying what failed and how to fix it, the right exit code, no
traceback, and nothing written or changed on disk (issue 13's classes, each with several cases).

Each case names a command line (with ``{ckpt}``, ``{out}``, ``{tmp}`` placeholders), the exit code and a
piece of the message. The working directory's files and the export's files are compared before and after.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from fastattn.cli import main
from fastattn.models import build, save
from tests.conftest import TINY_DECODER

VOCAB = TINY_DECODER.vocab_size


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(decoder_export, tmp_path_factory):
    """Inputs of every kind, made once: good and bad model files, data files, tampered exports."""
    ckpt, exported = decoder_export
    root = tmp_path_factory.mktemp("bad")
    shutil.copytree(exported.output, root / "out")
    (root / "file").write_text("not a directory")
    (root / "user").mkdir()
    (root / "user" / "notes.txt").write_text("mine")
    (root / "emptydir").mkdir()
    np.savez(root / "wrongkeys.npz", tokens=np.zeros((2, 4), np.int64))
    (root / "corrupt.npz").write_bytes(b"PK\x03\x04 truncated")
    np.save(root / "single.npy", np.zeros(3))
    (root / "plan.json").write_text(json.dumps({"graphs": 5}))
    (root / "code.py").write_text("X = 1\n")
    torch.save(torch.nn.Linear(4, 4), root / "pickled.pt")

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {root / 'pwned'}",))

    torch.save({"x": Evil()}, root / "evil.pt")
    payload = torch.load(ckpt, weights_only=True)
    bad_heads = {**payload, "config": {**payload["config"], "num_heads": 0}}
    torch.save(bad_heads, root / "heads0.pt")
    torch.save({**payload, "eval": [1, 2, 3]}, root / "evallist.pt")
    model = build(TINY_DECODER, seed=0)
    with torch.no_grad():
        model.decoder.layers[0].ffn.up_proj.weight[0, 0] = float("nan")
    save(model, root / "nan.pt")
    manifest = json.loads((root / "out" / "fastattn.json").read_text())
    (root / "outside.onnx").write_bytes((root / "out" / "model.onnx").read_bytes())
    tampered = {
        "list": [1, 2, 3], "null": None, "session": {**manifest, "session": [1]},
        "optimizers": {**manifest, "session": {**manifest["session"], "disabled_optimizers": 5}},
        "file5": _graph(manifest, file=5), "absolute": _graph(manifest, file="/etc/passwd"),
        "dotdot": _graph(manifest, file="../outside.onnx"), "negative": _input(manifest, shape=["batch", -3]),
        "dtype": _input(manifest, dtype="int1024"), "version": {**manifest, "format_version": 99},
        "arch": {**manifest, "arch": "transformer"},
    }  # fmt: skip
    for name, data in tampered.items():
        directory = root / f"t-{name}"
        shutil.copytree(root / "out", directory)
        (directory / "fastattn.json").write_text(json.dumps(data))
    link = root / "t-symlink"
    shutil.copytree(root / "out", link)
    (link / "model.onnx").unlink()
    (link / "model.onnx").symlink_to(root / "outside.onnx")
    return ckpt, root


def _graph(manifest: dict, **changes) -> dict:
    return {**manifest, "graphs": [{**manifest["graphs"][0], **changes}]}


def _input(manifest: dict, **changes) -> dict:
    graph = manifest["graphs"][0]
    return _graph(manifest, inputs=[{**graph["inputs"][0], **changes}, *graph["inputs"][1:]])


def ids(batch_ids: str) -> list[str]:
    """Feeds of one decoder call with these token ids (an empty cache)."""
    n = len(json.loads(batch_ids)[0])
    return ["--input", f"input_ids={batch_ids}", "--input", f"attention_mask={[[1] * n]}".replace(" ", ""),
            "--random", "--size", "past_sequence=0"]  # fmt: skip


EXPORT = ["export", "{ckpt}", "-o", "{tmp}/new"]
CASES = [
    # model files
    (["export", "{tmp}/missing.pt", "-o", "{tmp}/new"], 2, "no such file or directory"),
    (["export", "{tmp}/emptydir", "-o", "{tmp}/new"], 2, "directory without config.json"),
    (["export", "{tmp}/file", "-o", "{tmp}/new"], 1, "not a PyTorch file"),
    (["export", "{tmp}/pickled.pt", "-o", "{tmp}/new"], 1, "refused: it holds a pickled Python object"),
    (["export", "{tmp}/evil.pt", "-o", "{tmp}/new"], 1, "would call posix.system"),
    (["export", "{tmp}/heads0.pt", "-o", "{tmp}/new"], 1, "num_heads must be a positive integer"),
    (["export", "{tmp}/evallist.pt", "-o", "{tmp}/new"], 1, "'eval' holds a list"),
    (["export", "{tmp}/nan.pt", "-o", "{tmp}/new"], 1, "NaN or infinite"),
    # options, checked before the long work
    ([*EXPORT, "--threads", "-4"], 2, "--threads"),
    ([*EXPORT, "-q", "int8", "--max-ppl-increase", "-5%"], 2, "negative"),
    ([*EXPORT, "-q", "int4", "--block-size", "1073741824"], 2, "--block-size"),
    ([*EXPORT, "-q", "int4", "--block-size", "24"], 2, "not a power of two"),
    ([*EXPORT, "--opset", "17"], 2, "--opset"),
    ([*EXPORT, "--lowering", "nosuch"], 2, "no lowering rule 'nosuch'"),
    ([*EXPORT, "-t", "openvino", "--lowering", "gqa"], 2, "emits ops the openvino target"),
    ([*EXPORT, "-t", "openvino", "--kv-buffer"], 2, "CPU path"),
    ([*EXPORT, "--lowering-plan", "{tmp}/plan.json"], 2, "is not a lowering plan"),
    ([*EXPORT, "--lowering", "gqa", "--lowering-plan", "{tmp}/plan.json"], 2, "both given"),
    ([*EXPORT, "--code", "{tmp}/code.py"], 2, "--allow-pickle"),
    ([*EXPORT, "--task", "text-generation"], 2, "--task is for Hugging Face"),
    ([*EXPORT, "--input", "x:batch,seq:float32"], 2, "declares its own inputs"),
    ([*EXPORT, "-q", "int8", "--eval", "{tmp}/corrupt.npz"], 2, "cannot read evaluation data"),
    ([*EXPORT, "-q", "int8", "--eval", "{tmp}/single.npy"], 2, "one array (.npy)"),
    ([*EXPORT, "-q", "int8", "--eval", "{tmp}/wrongkeys.npz"], 2, "lacks input_ids, attention_mask"),
    ([*EXPORT, "-q", "int8-static", "--calibration", "{tmp}/wrongkeys.npz"], 2, "calibration data"),
    (["export", "{tmp}/pickled.pt", "--allow-pickle", "-o", "{tmp}/new", "--input", "x:batch,0,4:float32"], 2,
     "is empty"),
    # destinations
    (["export", "{ckpt}", "-o", "{tmp}/file/out"], 2, "is a file, not a directory"),
    (["export", "{ckpt}", "-o", "{tmp}/file"], 2, "exists and is not a directory"),
    (["export", "{ckpt}", "-o", "{tmp}/user", "--force"], 2, "not a fastattn export"),
    (["export", "{ckpt}", "-o", "{tmp}/out"], 2, "holds an earlier export"),
    # run: sizes, saves, values
    (["run", "{tmp}/out", "--random", "--size", "foo=3"], 2, "'foo', not a dim"),
    (["run", "{tmp}/out", "--size", "batch=2"], 2, "only sizes inputs made by --random"),
    (["run", "{tmp}/out", "--random", "--size", "batch=x"], 2, "bad --size"),
    (["run", "{tmp}/out", "--random", "--size", "batch=0"], 2, "'batch' is 0"),
    (["run", "{tmp}/out", "--random", "--size", "sequence=0"], 2, "'sequence' is 0"),
    (["run", "{tmp}/out", "--random", "--save", "{tmp}/nodir/x.npz"], 2, "does not exist"),
    (["run", "{tmp}/out", "--random", "--save", "{tmp}/emptydir"], 2, "is a directory"),
    (["run", "{tmp}/out", *ids(f"[[1,2,{VOCAB}]]")], 2, "outside the vocabulary"),
    (["run", "{tmp}/out", *ids("[[-1,2,3]]")], 2, "outside the vocabulary"),
    (["run", "{tmp}/out", "--random", "--input", "attention_mask=[[1,2,1]]", "--size", "past_sequence=0", "--size",
      "sequence=3"], 2,
     "is a mask but holds 2"),
    (["run", "{tmp}/out", "--random", "--threads", "-4"], 2, "--threads"),
    (["run", "{tmp}/out", "--random", "--size", "batch=1000000000", "--size", "sequence=1000000"], 1,
     "out of memory"),
    (["run", "{tmp}/out", "-p", "warp", "--random"], 1, "unknown execution provider"),
    (["run", "{tmp}/file", "--random"], 2, "is not a directory"),
    # tampered manifests
    (["run", "{tmp}/t-list", "--random"], 2, "list is not an object"),
    (["run", "{tmp}/t-null", "--random"], 2, "NoneType is not an object"),
    (["run", "{tmp}/t-session", "--random"], 2, "session: [1] is not an object"),
    (["run", "{tmp}/t-optimizers", "--random"], 2, "disabled_optimizers: 5 is not a list"),
    (["run", "{tmp}/t-file5", "--random"], 2, "graphs[0].file: 5 is not a string"),
    (["run", "{tmp}/t-absolute", "--random"], 2, "not a file name inside the export directory"),
    (["run", "{tmp}/t-dotdot", "--random"], 2, "not a file name inside the export directory"),
    (["run", "{tmp}/t-symlink", "--random"], 2, "leads outside the export directory"),
    (["run", "{tmp}/t-negative", "--random"], 2, "-3 is negative"),
    (["run", "{tmp}/t-dtype", "--random"], 2, "'int1024' is not one of"),
    (["run", "{tmp}/t-version", "--random"], 2, "format_version 99"),
    (["run", "{tmp}/t-arch", "--random"], 2, "'transformer' is not one of"),
    (["generate", "{tmp}/t-symlink", "--prompt-ids", "1,2"], 2, "leads outside the export directory"),
    (["bench", "{tmp}/t-session"], 2, "session: [1] is not an object"),
    (["bench", "{tmp}/t-symlink"], 2, "leads outside the export directory"),
    # generate
    (["generate", "{tmp}/out", "--prompt-ids", f"1,2,{VOCAB}"], 2, "outside the vocabulary"),
    (["generate", "{tmp}/out", "--prompt-ids=-1,2"], 2, "outside the vocabulary"),
    (["generate", "{tmp}/out", "--prompt-ids", "1,2", "--temperature", "nan"], 2, "temperature"),
    (["generate", "{tmp}/out", "--prompt-ids", "1,2", "--top-p", "0"], 2, "--top-p"),
    (["generate", "{tmp}/out", "--prompt-ids", "1,2", "--max-new-tokens", "0"], 2, "--max-new-tokens"),
    (["generate", "{tmp}/out", "--prompt-ids", "1,x"], 2, "bad --prompt-ids"),
    (["generate", "{tmp}/out", "--prompt", "hello"], 2, "has no tokenizer.json"),
    (["generate", "{tmp}/out"], 2, "give --prompt or --prompt-ids"),
    # bench, quantize, optimize, validate, package, train
    (["bench", "{tmp}/out", "--threads", "0"], 2, "--threads"),
    (["bench", "{tmp}/out", "--seq", "8", "--sweep-seq", "8,16"], 2, "--seq and --sweep-seq"),
    (["bench", "{tmp}/emptydir"], 2, "has no fastattn.json"),
    (["optimize", "{tmp}/out"], 2, "already lowered"),
    (["quantize", "{tmp}/out", "-q", "int8", "--min-cosine", "2"], 2, "--min-cosine"),
    (["quantize", "{tmp}/user", "-q", "int8"], 2, "has no fastattn.json"),
    (["validate", "{tmp}/missing.pt", "{tmp}/out"], 2, "no such file or directory"),
    (["package", "{tmp}/out"], 2, "no package named"),
    (["package", "{tmp}/user", "--ort"], 2, "has no fastattn.json"),
    (["train", "lm", "-o", "{tmp}/emptydir", "--steps", "1"], 2, "is a directory"),
    (["train", "lm", "-o", "{tmp}/nodir/lm.pt", "--steps", "1"], 2, "does not exist"),
    (["train", "lm", "-o", "{tmp}/lm.pt", "--lr", "-1"], 2, "--lr"),
    (["create", "huge", "-o", "{tmp}/x.pt"], 2, "unknown preset"),
    (["nosuch"], 2, "No such command"),
]


@pytest.mark.parametrize("args, code, message", CASES, ids=[" ".join(c[0][:3]) + f" {i}" for i, c in enumerate(CASES)])
def test_bad_input_is_one_line_with_its_exit_code_and_writes_nothing(world, args, code, message):
    ckpt, root = world
    before = tree(root)
    args = [a.format(ckpt=ckpt, tmp=root, out=root / "out") for a in args]
    result = CliRunner().invoke(main, args)
    text = result.stderr + result.stdout
    assert result.exit_code == code, text
    assert message in text, text
    assert "Traceback" not in text and text.strip().startswith("error:") and text.count("\n") == 1, text
    assert tree(root) == before  # nothing written, nothing changed, nothing deleted
    assert not (root / "pwned").exists()


def test_the_suite_covers_many_cases():
    assert len(CASES) >= 80

"""load_model: every supported form of model.pt, recognised by content; one clear line per failure."""

from __future__ import annotations

import datetime
import pickle
import zipfile

import pytest
import torch
from torch import nn

from fastattn.errors import InputError, LoadError
from fastattn.families.load import ModelFormat, load_model


@pytest.fixture(scope="module")
def transformer() -> nn.Transformer:
    torch.manual_seed(0)
    return nn.Transformer(16, 2, 1, 1, 32, dropout=0.0, batch_first=True).eval()


@pytest.fixture(scope="module")
def encoder() -> nn.TransformerEncoder:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
    return nn.TransformerEncoder(layer, 1, enable_nested_tensor=False).eval()


X = torch.randn(2, 5, 16)
pytestmark = pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::UserWarning")


def test_torchscript_archive_whatever_its_suffix(tmp_path, encoder):
    path = tmp_path / "model.bin"
    with torch.no_grad():
        torch.jit.save(torch.jit.trace(encoder, (X,), check_trace=False), path)
    loaded = load_model(path)
    assert loaded.format is ModelFormat.TORCHSCRIPT and isinstance(loaded.module, torch.jit.ScriptModule)
    assert not loaded.module.training and loaded.source == path
    assert torch.allclose(loaded.module(X), encoder(X), atol=1e-6)


def test_exported_program(tmp_path, encoder):
    path = tmp_path / "model.pt"  # not .pt2: detection is by content
    torch.export.save(torch.export.export(encoder, (X,)), path)
    loaded = load_model(path)
    assert loaded.format is ModelFormat.EXPORTED_PROGRAM
    assert isinstance(loaded.module, torch.export.ExportedProgram)
    assert torch.allclose(loaded.module.module()(X), encoder(X), atol=1e-6)


def test_fastattn_checkpoint_returns_the_payload(tmp_path):
    payload = {"format": "fastattn", "config": {"d_model": 8}, "state_dict": {"w": torch.ones(2)}}
    torch.save(payload, tmp_path / "ckpt.pt")
    loaded = load_model(tmp_path / "ckpt.pt")
    assert loaded.format is ModelFormat.FASTATTN and loaded.module is None
    assert loaded.checkpoint["config"] == {"d_model": 8} and torch.equal(
        loaded.checkpoint["state_dict"]["w"], torch.ones(2)
    )


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_pickled_module_is_refused_without_the_flag(tmp_path, transformer, zip_format):
    path = tmp_path / "model.pt"
    torch.save(transformer, path, _use_new_zipfile_serialization=zip_format)
    with pytest.raises(LoadError) as e:
        load_model(path)
    message = str(e.value)
    assert (
        "\n" not in message
        and "--allow-pickle" in message
        and "unpickling it runs code from the file" in message
    )
    assert "torch.nn.modules.transformer.Transformer" in message


def test_pickled_module_loads_with_the_flag(tmp_path, transformer):
    torch.save(transformer, tmp_path / "model.pt")
    loaded = load_model(tmp_path / "model.pt", allow_pickle=True)
    assert loaded.format is ModelFormat.PICKLED_MODULE and isinstance(loaded.module, nn.Transformer)
    assert not loaded.module.training and "--allow-pickle" in loaded.notes[0]
    src, tgt = torch.randn(2, 5, 16), torch.randn(2, 3, 16)
    assert torch.equal(loaded.module(src, tgt), transformer(src, tgt))


def _write(tmp_path, name: str, content: bytes):
    path = tmp_path / name
    path.write_bytes(content)
    return path


def _zip(tmp_path, name: str, entries: dict[str, str]):
    path = tmp_path / name
    with zipfile.ZipFile(path, "w") as z:
        for entry, text in entries.items():
            z.writestr(entry, text)
    return path


@pytest.mark.parametrize(
    "make, error, words",
    [
        (lambda d: d / "missing.pt", InputError, "no such file"),
        (lambda d: d, InputError, "is a directory"),
        (lambda d: _write(d, "empty.pt", b""), LoadError, "is empty"),
        (lambda d: _write(d, "notes.txt", b"hello, world\n"), LoadError, "is not a PyTorch file"),
        (lambda d: _write(d, "cut.pt", b"PK\x03\x04" + b"\0" * 60), LoadError, "damaged zip archive"),
        (
            lambda d: _write(d, "junk.pt", b"\x80\x04junk that is no pickle"),
            LoadError,
            "damaged or foreign torch.save",
        ),
        (
            lambda d: _write(d, "plain.pkl", pickle.dumps([1, 2], protocol=2)),
            LoadError,
            "damaged or foreign torch.save",
        ),
        (lambda d: _zip(d, "other.zip", {"a/readme.txt": "hi"}), LoadError, "not a PyTorch one"),
        (
            lambda d: _zip(d, "bad.pt", {"m/data.pkl": "garbage", "m/version": "3"}),
            LoadError,
            "damaged or foreign",
        ),
    ],
    ids=[
        "missing",
        "directory",
        "empty",
        "text",
        "truncated-zip",
        "bad-pickle",
        "plain-pickle",
        "foreign-zip",
        "corrupt-archive",
    ],
)
def test_bad_files_fail_with_one_line(tmp_path, make, error, words):
    with pytest.raises(error) as e:
        load_model(make(tmp_path))
    assert type(e.value) is error and words in str(e.value) and "\n" not in str(e.value)


def test_truncated_torch_save_file(tmp_path, encoder):
    path = tmp_path / "model.pt"
    torch.save(encoder.state_dict(), path)
    cut = _write(tmp_path, "cut.pt", path.read_bytes()[:200])
    with pytest.raises(LoadError, match="damaged zip archive"):
        load_model(cut)


def test_state_dict_is_not_a_model(tmp_path, encoder):
    torch.save(encoder.state_dict(), tmp_path / "weights.pt")
    with pytest.raises(
        LoadError, match=r"holds a state dict \(\d+ tensors\), not a model.*torch.export.save"
    ):
        load_model(tmp_path / "weights.pt")


def test_other_pickled_objects_are_not_models(tmp_path):
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(LoadError, match="holds a list, not a model"):
        load_model(tmp_path / "list.pt")
    torch.save(datetime.date(2020, 1, 1), tmp_path / "obj.pt")
    with pytest.raises(
        LoadError, match=r"\(datetime.date\).*--allow-pickle"
    ):  # a global weights_only refuses
        load_model(tmp_path / "obj.pt")
    with pytest.raises(LoadError, match="holds a date, not an nn.Module"):
        load_model(tmp_path / "obj.pt", allow_pickle=True)

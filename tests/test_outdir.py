"""The output directory never costs a user a file: what --force may replace, locks, rejections, stale staging."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fastattn.errors import InputError
from fastattn.outdir import DestinationLock, Staging, check_destination, sweep_stale, written_files


def fake_export(directory: Path, extra: dict[str, str] | None = None) -> Path:
    """A directory holding what fastattn writes: a manifest that lists its files, and those files."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "model.onnx").write_bytes(b"graph")
    (directory / "report.md").write_text("report")
    manifest = {"format_version": 1, "graphs": [], "files": ["model.onnx", "report.md"]}
    (directory / "fastattn.json").write_text(json.dumps(manifest))
    for name, text in (extra or {}).items():
        (directory / name).write_text(text)
    return directory


def tree(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_force_replaces_an_earlier_export_and_nothing_else(tmp_path):
    out = fake_export(tmp_path / "out")
    with pytest.raises(InputError, match="holds an earlier export.*--force"):
        check_destination(out, force=False)
    check_destination(out, force=True)  # only fastattn's own files: may be replaced
    (out / "notes.txt").write_text("mine")
    for force in (False, True):
        with pytest.raises(InputError, match=r"holds files fastattn did not write \(notes.txt\)"):
            check_destination(out, force=force)


@pytest.mark.parametrize("force", [False, True])
def test_a_directory_without_a_manifest_is_never_replaced(tmp_path, force):
    user = tmp_path / "project"
    user.mkdir()
    (user / "model.pt").write_bytes(b"weights")
    with pytest.raises(InputError, match="not empty and is not a fastattn export"):
        check_destination(user, force=force)
    check_destination(tmp_path / "new", force=force)  # missing or empty: fine
    (tmp_path / "empty").mkdir()
    check_destination(tmp_path / "empty", force=force)


def test_the_current_directory_and_its_parents_are_refused(tmp_path, monkeypatch):
    here = fake_export(tmp_path / "work")  # even a pure earlier export: the shell is standing in it
    monkeypatch.chdir(here)
    for target in (Path("."), here, tmp_path):
        with pytest.raises(InputError, match="is the current directory or holds it"):
            check_destination(target, force=True)


def test_a_directory_holding_an_input_is_refused(tmp_path):
    out = fake_export(tmp_path / "out")
    with pytest.raises(InputError, match="holds .*model.onnx, an input of this run"):
        check_destination(out, force=True, inputs=[out / "model.onnx"])


def test_symbolic_links_are_never_written_through(tmp_path):
    target = fake_export(tmp_path / "real")
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(InputError, match="is a symbolic link"):
        Staging(link, force=True)
    assert tree(target)  # untouched
    inner = fake_export(tmp_path / "out")
    (inner / "report.md").unlink()
    (inner / "report.md").symlink_to(tmp_path / "elsewhere.md")  # a listed name that is a link is foreign
    with pytest.raises(InputError, match="did not write"):
        check_destination(inner, force=True)


def test_paths_under_a_file_and_unwritable_parents_are_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file, not a directory"):
        check_destination(tmp_path / "file" / "out", force=False)
    with pytest.raises(InputError, match="exists and is not a directory"):
        check_destination(tmp_path / "file", force=True)
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(InputError, match="cannot write in"):
            Staging(locked / "out")


def test_commit_replaces_only_after_checking_again(tmp_path):
    out = fake_export(tmp_path / "out")
    with Staging(out, force=True) as staging:
        (staging.path / "model.onnx").write_bytes(b"new")
        (out / "notes.txt").write_text("written meanwhile")  # the user adds a file during the run
        with pytest.raises(InputError, match="did not write"):
            staging.commit()
    assert (out / "notes.txt").read_text() == "written meanwhile" and (out / "model.onnx").read_bytes() == b"graph"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # the staging directory is gone


def test_a_second_writer_fails_at_once(tmp_path):
    out = tmp_path / "out"
    with Staging(out):
        with pytest.raises(InputError, match=rf"another fastattn run \(pid {os.getpid()}\) is writing .*out"):
            Staging(out)
    with Staging(out):  # released: free again
        pass
    lock = DestinationLock(out)
    lock.acquire()
    lock.release()
    assert not lock.path.exists()


def test_rejections_never_replace_a_users_directory(tmp_path):
    out = tmp_path / "out"
    user_rejected = tmp_path / "out.rejected"
    user_rejected.mkdir()
    (user_rejected / "keep.txt").write_text("mine")
    with Staging(out) as staging:
        (staging.path / "report.md").write_text("failed")
        (staging.path / "fastattn.json").write_text(json.dumps({"format_version": 1, "graphs": [],
                                                                "files": ["report.md"]}))  # fmt: skip
        kept = staging.reject()
    assert kept == tmp_path / "out.rejected-1" and (kept / "report.md").read_text() == "failed"
    assert (user_rejected / "keep.txt").read_text() == "mine"
    with Staging(out) as staging:  # an earlier rejection of fastattn's own is replaced
        (staging.path / "report.md").write_text("again")
        (staging.path / "fastattn.json").write_text((kept / "fastattn.json").read_text())
        assert staging.reject() == tmp_path / "out.rejected-1"
    assert (kept / "report.md").read_text() == "again"


def test_stale_staging_of_dead_processes_is_swept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    stale = tmp_path / f".out.fastattn-{pid}-abc123"
    stale.mkdir()
    (stale / "model.onnx").write_bytes(b"half")
    alive = tmp_path / f".out.fastattn-{os.getpid()}-def456"
    alive.mkdir()
    user = tmp_path / ".out.fastattn-notes"  # not a staging name: never touched
    user.mkdir()
    assert sweep_stale(tmp_path) == [stale]
    assert not stale.exists() and alive.exists() and user.exists()


def test_written_files_of_old_manifests_and_non_exports(tmp_path):
    assert written_files(tmp_path) is None
    old = tmp_path / "old"
    old.mkdir()
    (old / "fastattn.json").write_text(json.dumps({"format_version": 1, "graphs": []}))
    for name in ("model.onnx", "report.md", "eval.npz", "mine.txt"):
        (old / name).write_text("x")
    assert sorted(written_files(old)) == ["eval.npz", "fastattn.json", "model.onnx", "report.md"]
    (old / "fastattn.json").write_text("[1, 2, 3]")
    assert written_files(old) is None

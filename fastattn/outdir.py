"""The output directory: what fastattn may replace, and how it is written all at once.

Everything is written into a hidden staging directory beside the destination and moved
into place with renames at the end, so an interrupted or failed run never leaves a
half-written export under the destination name. Rules that keep a user's files safe:

* fastattn replaces only what it wrote itself: a directory is recognised as an earlier
  export by its ``fastattn.json``, and only when every entry in it is a file that export
  lists (``files`` in the manifest). ``--force`` replaces such a directory and nothing
  else; a directory holding anything more is refused, whatever the flags.
* never the current directory or one of its parents, never a directory holding an input
  of the run (the model file, evaluation data, ...), never through a symbolic link;
* one writer per destination: a lock file beside it (``.<name>.fastattn.lock``) is held
  from the first check to the commit, so a second run fails at once instead of silently
  replacing the first run's result;
* a rejected export is kept as ``<destination>.rejected`` for inspection. An existing
  ``.rejected`` directory is replaced only when fastattn wrote it; otherwise the new one
  gets the next free name ``<destination>.rejected-N``;
* staging directories are named ``.<name>.fastattn-<pid>-<random>``: a run that was killed
  (SIGKILL, power loss) leaves one behind, and the next run beside it removes those whose
  process is gone.

Standard library only.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from fastattn.errors import InputError

log = logging.getLogger(__name__)

MANIFEST_NAME = "fastattn.json"
# What exports wrote before the manifest listed its files (format 1 without "files").
_LEGACY_FILES = re.compile(
    r"(fastattn\.json|report\.md|eval\.npz|tokenizer\.json|(model|encoder|decoder)\.onnx(\.data)?)"
)
_STAGING = re.compile(r"\.(?P<name>.+)\.fastattn-(?P<pid>\d+)-\w+")


def written_files(directory: Path) -> list[str] | None:
    """The entries of ``directory`` an export of fastattn wrote, by its manifest; None when the
    directory holds no readable fastattn manifest (then fastattn wrote none of it)."""
    try:
        data = json.loads((directory / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or "format_version" not in data or "graphs" not in data:
        return None
    files = data.get("files")
    if isinstance(files, list) and all(isinstance(f, str) for f in files):
        return [*files, MANIFEST_NAME]
    return sorted(p.name for p in directory.iterdir() if _LEGACY_FILES.fullmatch(p.name))


def _foreign_entries(directory: Path) -> list[str] | None:
    """Entries of ``directory`` fastattn did not write (None: not an export at all)."""
    owned = written_files(directory)
    if owned is None:
        return None
    return sorted(p.name for p in directory.iterdir() if p.name not in owned or p.is_symlink() or p.is_dir())


def _inside(path: Path, directory: Path) -> bool:
    try:
        path.resolve().relative_to(directory.resolve())
    except ValueError:
        return False
    return True


def check_destination(destination: Path, force: bool, inputs: Iterable[Path] = ()) -> None:
    """Refuse a destination fastattn must not write (see the module's rules); ``inputs`` are the
    files the run reads, which must stay outside it."""
    if destination.is_symlink():
        raise InputError(f"output {destination} is a symbolic link; fastattn does not write through links",
                         "pass the real directory, or a new path, with -o")  # fmt: skip
    for parent in destination.absolute().parents:
        if parent.is_file():
            raise InputError(f"output {destination}: {parent} is a file, not a directory", "choose another -o path")
    if destination.exists() and not destination.is_dir():
        raise InputError(f"output {destination} exists and is not a directory", "choose another output path with -o")
    if _inside(Path.cwd(), destination):
        raise InputError(f"output {destination} is the current directory or holds it",
                         "write the export into a new subdirectory, e.g. -o out/")  # fmt: skip
    for path in inputs:
        if destination.exists() and _inside(path, destination):
            raise InputError(f"output {destination} holds {path}, an input of this run",
                             "write the export somewhere else with -o")  # fmt: skip
    if not destination.is_dir() or not any(destination.iterdir()):
        return
    foreign = _foreign_entries(destination)
    if foreign is None:
        raise InputError(f"output directory {destination} is not empty and is not a fastattn export",
                         "choose a new or empty directory with -o (fastattn replaces only its own exports)")  # fmt: skip
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise InputError(f"output directory {destination} holds files fastattn did not write ({shown})",
                         "move them away or choose another -o; fastattn replaces only its own exports")  # fmt: skip
    if not force:
        raise InputError(f"output directory {destination} holds an earlier export",
                         "pass --force to replace it, or use another -o")  # fmt: skip


def sweep_stale(parent: Path) -> list[Path]:
    """Remove staging directories in ``parent`` left by fastattn processes that no longer run."""
    removed: list[Path] = []
    try:
        entries = list(parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _STAGING.fullmatch(entry.name)
        if match is None or not entry.is_dir() or entry.is_symlink() or _alive(int(match["pid"])):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        log.info("removed %s, left by a fastattn run that no longer runs", entry)
        removed.append(entry)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def staging_dir(parent: Path, name: str) -> Path:
    """A new hidden directory in ``parent`` that :func:`sweep_stale` recognises."""
    try:
        return Path(tempfile.mkdtemp(prefix=f".{name}.fastattn-{os.getpid()}-", dir=parent))
    except OSError as e:
        raise InputError(f"cannot write in {parent} ({e.strerror})", "choose a writable -o directory") from e


class DestinationLock:
    """An exclusive lock on writing ``destination``, held by an open lock file beside it."""

    def __init__(self, destination: Path):
        self.destination = destination
        self.path = destination.with_name(f".{destination.name}.fastattn.lock")
        self.fd: int | None = None

    def acquire(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise InputError(f"cannot write in {self.path.parent} ({e.strerror})", "choose a writable -o directory") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            if e.errno in (errno.EAGAIN, errno.EACCES):
                raise InputError(f"another fastattn run (pid {holder}) is writing {self.destination}",
                                 "wait for it to finish, or write to another -o") from None  # fmt: skip
            raise
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.unlink(self.path)
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None


class Staging:
    """A hidden directory that becomes ``destination`` on :meth:`commit` and vanishes otherwise.

    It holds the destination's lock from creation to exit. ``inputs`` are files the run
    reads; the destination is checked again at commit (its contents may have changed).
    """

    def __init__(self, destination: Path, force: bool = False, inputs: Iterable[Path] = (), replace_self: bool = False):
        self.destination = destination.absolute()
        self.force, self.inputs = force, tuple(inputs)
        self.replace_self = replace_self  # the destination is the export being reworked in place
        self._check()
        try:
            self.destination.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(f"cannot create {self.destination.parent} ({e.strerror})", "choose another -o") from e
        self.lock = DestinationLock(self.destination)
        self.lock.acquire()
        try:
            sweep_stale(self.destination.parent)
            self.path = staging_dir(self.destination.parent, self.destination.name)
        except BaseException:
            self.lock.release()
            raise

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self.path.exists():
                shutil.rmtree(self.path, ignore_errors=True)
        finally:
            self.lock.release()

    def _check(self) -> None:
        if not self.replace_self:
            check_destination(self.destination, self.force, self.inputs)
            return
        foreign = _foreign_entries(self.destination)
        if foreign is None or foreign or self.destination.is_symlink():
            raise InputError(f"{self.destination} is not a fastattn export holding only its own files "
                             f"({', '.join(foreign or ['no fastattn.json'])})",
                             "write the result elsewhere with -o")  # fmt: skip

    def work_dir(self, label: str) -> Path:
        """A scratch directory inside the staging directory (removed with it; see :meth:`files`)."""
        return Path(tempfile.mkdtemp(prefix=f".work-{label}-", dir=self.path))

    def files(self) -> list[str]:
        """What the staging directory will commit (scratch directories excluded)."""
        return sorted(p.name for p in self.path.iterdir() if not p.name.startswith(".work-"))

    def commit(self) -> Path:
        """Replace the destination with the staged directory (an old export is removed only after)."""
        self._check()
        return self._move_to(self.destination)

    def reject(self) -> Path:
        """Keep the staged directory as ``<destination>.rejected`` (or ``.rejected-N``) for inspection."""
        base = self.destination.with_name(self.destination.name + ".rejected")
        target, n = base, 1
        while target.exists() or target.is_symlink():
            if target.is_dir() and not target.is_symlink() and _foreign_entries(target) == []:
                break  # an earlier rejection of fastattn's own: replace it
            target, n = base.with_name(f"{base.name}-{n}"), n + 1
        return self._move_to(target)

    def _move_to(self, target: Path) -> Path:
        for scratch in self.path.glob(".work-*"):
            shutil.rmtree(scratch, ignore_errors=True)
        old = None
        if target.exists():
            old = staging_dir(target.parent, target.name)
            os.replace(target, old / "old")
        os.replace(self.path, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return target

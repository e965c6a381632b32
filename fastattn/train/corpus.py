"""The training corpus: the Python standard library's own sources, available offline.

Every ``*.py`` file under ``sysconfig.get_paths()["stdlib"]`` (``site-packages`` excluded,
so installed packages never change it), sorted by relative path and read as UTF-8 (the
few files in other encodings are skipped). Files are split, not lines: a file is
held out when the hash of its relative path falls below :data:`HELDOUT_FRACTION`, so the
split is the same on every machine and held-out text is never trained on.

:func:`identity` names the corpus (Python version + every file's path and size) without
reading it, for cache keys.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import platform
import sysconfig
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

HELDOUT_FRACTION = 0.15
EXCLUDED_DIRS = frozenset({"site-packages", "dist-packages", "__pycache__"})


@dataclass(frozen=True)
class Document:
    path: str  # relative to the stdlib root, with forward slashes
    text: str

    @property
    def package(self) -> str:
        """Top-level package (``asyncio`` for ``asyncio/events.py``); ``""`` for top-level modules."""
        head, sep, _ = self.path.partition("/")
        return head if sep else ""


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: one object per load()
class Corpus:
    root: Path
    train: tuple[Document, ...]
    heldout: tuple[Document, ...]
    identity: str

    def split(self, heldout: bool) -> tuple[Document, ...]:
        return self.heldout if heldout else self.train


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def is_heldout(path: str, fraction: float = HELDOUT_FRACTION) -> bool:
    """Whether the file at relative ``path`` belongs to the held-out split (by hash of the path)."""
    digest = hashlib.sha256(path.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") < fraction * 2**64


def source_files(root: Path) -> list[tuple[str, Path]]:
    """(relative path, file) of every source file of the corpus, sorted by relative path."""
    files = []
    for p in root.rglob("*.py"):
        rel = p.relative_to(root)
        if EXCLUDED_DIRS.isdisjoint(rel.parts) and p.is_file():
            files.append((rel.as_posix(), p))
    return sorted(files)


def identity(root: Path | None = None) -> str:
    """A short hash of the corpus: Python version plus every file's relative path and size
    (computed once per process and root)."""
    return _identity(root or stdlib_root())


@functools.lru_cache(maxsize=4)
def _identity(root: Path) -> str:
    h = hashlib.sha256(f"python {platform.python_version()}\n".encode())
    for rel, p in source_files(root):
        h.update(f"{rel}\t{p.stat().st_size}\n".encode())
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=2)
def load(root: Path | None = None) -> Corpus:
    """The corpus under ``root`` (the running Python's stdlib by default), read once per process."""
    root = root or stdlib_root()
    train, heldout, skipped = [], [], 0
    for rel, p in source_files(root):
        try:
            text = p.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            skipped += 1
            continue
        (heldout if is_heldout(rel) else train).append(Document(rel, text))
    log.info("corpus %s: %d training files, %d held out, %d not UTF-8", root, len(train), len(heldout), skipped)
    return Corpus(root, tuple(train), tuple(heldout), _identity(root))

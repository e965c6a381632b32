"""Where a benchmark script writes, and what every result names: the command that reproduces it.

Every script takes the same two options:

* ``--smoke``: the same code path end to end at tiny sizes (tiny models, one or two repeats,
  one or two sizes); its results go into ``--out`` or a new temporary directory, never into
  benchmarks/results/, and its work files (checkpoints, exports, caches) beside them.
  ``tests/benchmarks/test_smoke.py`` runs each one.
* ``--out DIR``: where the results go (default: benchmarks/results/).

Paths never depend on the working directory: the repository root is found from this file.
Run the scripts from the root of a clone after ``make setup`` (``python`` is ``.venv/bin/python``):
``python -m benchmarks.<name>``; the command each results file names is exactly that.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BUILD = ROOT / "build"
CACHE_ENV = "FASTATTN_CACHE"  # fastattn.train.cache: where trained checkpoints are kept


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes, the same code path end to end; results into --out or a temporary directory")  # fmt: skip
    parser.add_argument("--out", type=Path, default=None,
                        help="results directory [benchmarks/results; --smoke: a new temporary directory]")  # fmt: skip


def out_dir(args: argparse.Namespace) -> Path:
    """The results directory: ``--out``, else benchmarks/results (a new temporary directory for ``--smoke``).

    A smoke run never writes into benchmarks/results: its figures are not measurements."""
    if args.out is None:
        return Path(tempfile.mkdtemp(prefix="fastattn-smoke-")) if args.smoke else RESULTS
    out = args.out.resolve()
    if args.smoke and (out == RESULTS or RESULTS in out.parents):
        raise SystemExit(f"--smoke results are not measurements: pass an --out outside {RESULTS}")
    out.mkdir(parents=True, exist_ok=True)
    return out


def work_dir(args: argparse.Namespace, out: Path, name: str) -> Path:
    """Checkpoints and exports: ``build/<name>`` in the repository, beside the results for ``--smoke``."""
    work = out / "work" if args.smoke else BUILD / name
    work.mkdir(parents=True, exist_ok=True)
    return work


def smoke_cache(work: Path) -> None:
    """Trained checkpoints of a smoke run go into its work directory, not the user's cache."""
    os.environ[CACHE_ENV] = str(work / "cache")


def command(module: str, *flags: str, setup: str = "") -> str:
    """The command line that reproduces a result from a clean clone (after ``make setup``)."""
    run = " ".join(["python -m", f"benchmarks.{module}", *flags])
    return f"{setup} && {run}" if setup else run


def write(out: Path, stem: str, record: dict, markdown: str) -> None:
    """``<stem>.json`` (with the command first) and ``<stem>.md`` (the command under its title)."""
    cmd = record["command"]
    record = {"command": cmd, **{k: v for k, v in record.items() if k != "command"}}
    lines = markdown.split("\n")
    if f"`{cmd}`" not in markdown:
        lines[1:1] = ["", f"Reproduce: `{cmd}`."]
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(record, indent=2) + "\n")
    (out / f"{stem}.md").write_text("\n".join(lines))
    print(f"wrote {out / stem}.{{json,md}}", flush=True)

"""The command line: a thin layer that builds typed options and calls one library function per command.

    entry.py      console-script entry points (signals handled from the first instant)
    app.py        consoles, error handling, logging and progress, shared options
    options.py    option bundles that become typed requests (quantization, lowering, inputs)
    summary.py    what an export, validation or quantization prints (tables, or JSON)
    commands.py   the ``fastattn`` group: one module per command below
    export.py  rework.py (optimize, quantize)  validate.py  create.py  run.py
    train.py  bench.py  generate.py

User errors (:class:`~fastattn.errors.FastAttnError`) print one line and exit non-zero
without a traceback; an interrupt (SIGINT, SIGTERM) removes what was being written and
exits 128 + the signal; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


def __getattr__(name: str):
    # `from fastattn.cli import main` without importing every command at package import
    if name in ("main", "export_main"):
        from fastattn.cli import commands  # noqa: PLC0415

        return getattr(commands, name)
    raise AttributeError(name)

"""Console-script entry points (``fastattn``, ``fastattn-export``).

Until a command runs there is nothing to clean up, so a signal during start-up exits at
once and quietly (a KeyboardInterrupt traceback from inside an import helps nobody). Once
a command runs, :func:`fastattn.cli.app.handle_errors` turns signals into an unwinding
:class:`~fastattn.errors.Interrupted`.
"""

from __future__ import annotations

import os
import signal

for _signum in (signal.SIGINT, signal.SIGTERM):
    signal.signal(_signum, lambda signum, _frame: os._exit(128 + signum))


def main() -> None:
    from fastattn.cli.commands import main as group  # noqa: PLC0415

    group()


def export_main() -> None:
    from fastattn.cli.commands import export_main as run  # noqa: PLC0415

    run()

"""What every command shares: consoles, error handling, logging and progress, common options.

Library code reports progress by logging at INFO on ``fastattn.*`` loggers; while a command
runs, :func:`progress` shows the latest such message in a status line on stderr (a
terminal only), so long work (capture, each lowering candidate timed, validation cases,
quantization attempts) is visible without ``-v`` and without the library printing.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import signal
import sys
from collections.abc import Callable, Iterator

import click
from rich.console import Console

from fastattn.errors import FastAttnError, Interrupted

WIDE = 240  # columns of tables written to a file or a pipe (a terminal uses its own width)


def _console(stderr: bool) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else WIDE, soft_wrap=not stream.isatty())


err = _console(stderr=True)
out = _console(stderr=False)


def _raise_interrupted(signum: int, _frame) -> None:
    raise Interrupted(signum)


def handle_errors(fn: Callable) -> Callable:
    """Run a command: user errors as one line and their exit code, interrupts as 128 + signal."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        before = {signum: signal.signal(signum, _raise_interrupted) for signum in (signal.SIGINT, signal.SIGTERM)}
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt as e:
            code = e.exit_code if isinstance(e, Interrupted) else 128 + signal.SIGINT
            err.print(f"[bold red]interrupted[/] ({signal.Signals(code - 128).name}): stopped; "
                      "nothing was left half-written", highlight=False)  # fmt: skip
            sys.exit(code)
        except FastAttnError as e:
            err.print(f"[bold red]error:[/] {sanitize(str(e))}", highlight=False, soft_wrap=True)
            if logging.getLogger().level <= logging.DEBUG and e.__cause__ is not None:
                err.print_exception()
            sys.exit(e.exit_code)
        except MemoryError:
            err.print("[bold red]error:[/] out of memory. Fix: use smaller sizes (batch, sequence) or fewer rows",
                      highlight=False)  # fmt: skip
            sys.exit(1)
        finally:
            for signum, handler in before.items():
                signal.signal(signum, handler)

    return wrapper


def sanitize(text: str) -> str:
    """Control characters (an ESC in a file name) shown as escapes, never sent to the terminal."""
    return "".join(c if c.isprintable() or c in "\n\t" else repr(c)[1:-1] for c in text)


_HANDLER = logging.StreamHandler()
_HANDLER.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))


def setup_logging(verbose: int) -> None:
    """Messages from ``-v`` (info) or ``-vv`` (debug) on stderr; warnings always. fastattn's own INFO
    records are always made (they feed the progress line) but printed only with ``-v``."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    root = logging.getLogger()
    if _HANDLER not in root.handlers:
        root.addHandler(_HANDLER)
    _HANDLER.setLevel(level)
    root.setLevel(level)
    logging.getLogger("fastattn").setLevel(min(level, logging.INFO))


class _StatusHandler(logging.Handler):
    def __init__(self, update: Callable[[str], None]):
        super().__init__(logging.INFO)
        self.update = update

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self.update(sanitize(record.getMessage())[:160])


@contextlib.contextmanager
def progress(label: str, quiet: bool = False) -> Iterator[Callable[[str], None]]:
    """A status line on stderr showing ``label``, then each INFO message of the library."""
    if quiet or not sys.stderr.isatty():
        yield lambda message: logging.getLogger("fastattn.cli").info(message)
        return
    with err.status(label) as status:
        handler = _StatusHandler(lambda message: status.update(message))
        logger = logging.getLogger("fastattn")
        logger.addHandler(handler)
        try:
            yield lambda message: status.update(sanitize(message))
        finally:
            logger.removeHandler(handler)


def print_json(data: object) -> None:
    """Machine-readable results on stdout, one document."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


class OneLineErrors:
    """Click's usage errors as one line (``error: ... Fix: see `fastattn X --help```, exit 2), like every other error."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, False, **extra)
        except click.UsageError as e:
            where = e.ctx.command_path if e.ctx is not None else (prog_name or self.name)
            err.print(f"[bold red]error:[/] {sanitize(e.format_message().rstrip('.'))}. Fix: see `{where} --help`",
                      highlight=False, soft_wrap=True)  # fmt: skip
            sys.exit(e.exit_code)
        except click.ClickException as e:
            err.print(f"[bold red]error:[/] {sanitize(e.format_message())}", highlight=False, soft_wrap=True)
            sys.exit(e.exit_code)
        except FastAttnError as e:  # raised while options are parsed (a callback), before the command runs
            err.print(f"[bold red]error:[/] {sanitize(str(e))}", highlight=False, soft_wrap=True)
            sys.exit(e.exit_code)
        except click.exceptions.Abort:
            err.print("[bold red]interrupted[/] (SIGINT)", highlight=False)
            sys.exit(128 + signal.SIGINT)
        sys.exit(rv if isinstance(rv, int) else 0)


class Group(OneLineErrors, click.Group):
    pass


class Command(OneLineErrors, click.Command):
    pass


def command(fn: Callable) -> Callable:
    """A command's body: logging set from ``verbose``, errors and interrupts handled."""

    @functools.wraps(fn)
    def run(*args, verbose: int = 0, **kwargs):
        setup_logging(verbose)
        return fn(*args, **kwargs)

    return handle_errors(run)


verbose_option = click.option("-v", "--verbose", count=True, help="More logging (-vv: debug, with tracebacks).")
threads_option = click.option("--threads", type=click.IntRange(min=1), default=None,
                              help="ONNX Runtime intra-op threads [default: ONNX Runtime's choice].")  # fmt: skip
provider_option = click.option("-p", "--provider", default="cpu", show_default=True,
                               help="Execution provider: cpu, cuda, openvino, ... or a full ONNX Runtime name.")  # fmt: skip
json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable results (JSON) on stdout.")
force_option = click.option("-f", "--force", is_flag=True,
                            help="Replace an earlier fastattn export at the output path (nothing else).")  # fmt: skip


def bundle(build: Callable[..., object], name: str, *options: Callable) -> Callable:
    """Click options whose values become one typed object: ``build(**values)`` is passed as ``name``."""

    def decorate(fn: Callable) -> Callable:
        params: list[str] = []

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            values = {p: kwargs.pop(p) for p in params}
            return fn(*args, **{name: build(**values)}, **kwargs)

        for option in reversed(options):
            wrapper = option(wrapper)
            params.append(wrapper.__click_params__[-1].name)
        return wrapper

    return decorate

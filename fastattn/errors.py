"""User-facing errors.

A :class:`FastAttnError` is a problem the user can fix (bad input, a missing file, a
model that fails validation). Its message is one line: what failed, then ``Fix: ...``.
The CLI prints it without a traceback and exits with :attr:`FastAttnError.exit_code`.
Any other exception is a bug in fastattn and keeps its traceback.

This module must stay importable without torch (the runtime uses it).
"""

from __future__ import annotations


class FastAttnError(Exception):
    """A failure the user can act on: ``what failed. Fix: how``."""

    exit_code = 1

    def __init__(self, what: str, fix: str | None = None):
        self.what = what
        self.fix = fix
        super().__init__(f"{what}. Fix: {fix}" if fix else what)


class InputError(FastAttnError):
    """Bad command-line or API input: a missing file, a malformed spec, a wrong shape."""

    exit_code = 2


class LoadError(FastAttnError):
    """A model file exists but cannot be loaded safely or at all."""


class ExportError(FastAttnError):
    """The model could not be captured or emitted as ONNX."""


class ValidationFailed(FastAttnError):
    """ONNX Runtime disagrees with PyTorch beyond the tolerance."""

    exit_code = 3


class RunError(FastAttnError):
    """ONNX Runtime failed while running a graph on valid inputs (out of memory, a provider's kernel)."""


class ProviderError(FastAttnError):
    """An execution provider was asked for that is unknown or not installed."""


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived. It unwinds like Ctrl-C, so ``with`` blocks remove what they staged;
    the CLI then exits with ``128 + signal`` (130 for Ctrl-C) and one line, no traceback."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
        self.exit_code = 128 + signum

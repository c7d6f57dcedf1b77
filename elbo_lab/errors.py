"""User-facing errors: the CLI prints their message on one line and exits 2 (no traceback).

This module is the one place that says how a failure reads to a user: :class:`ElboLabError` (bad input) and
:func:`user_message`, which turns the operating system's failures (read-only or immutable paths, a full disk,
a directory where a file was expected, ...) and running out of memory into one line.  ``elbo_lab.cli.main``
catches both for every command.  Tests: ``tests/test_reliability.py``.
"""

from __future__ import annotations

import errno
import os

__all__ = [
    "CheckpointError",
    "DataError",
    "DivergedError",
    "ElboLabError",
    "ModelOutputError",
    "OptionError",
    "OutputError",
    "os_error_message",
    "os_reason",
    "user_message",
]


class ElboLabError(Exception):
    """A problem with the user's input (data, options, checkpoint) -- reported as one line, exit status 2."""


class DataError(ElboLabError, ValueError):
    """Missing, malformed or out-of-range data."""


class CheckpointError(ElboLabError, ValueError):
    """A corrupt, foreign or incompatible checkpoint."""


class OptionError(ElboLabError, ValueError):
    """An option value outside its documented range (checked before any work starts)."""


class ModelOutputError(ElboLabError, ValueError):
    """A model's output (ε̂, v) or a bound computed from it is not finite or outside its domain."""


class DivergedError(ElboLabError, FloatingPointError):
    """Training produced a non-finite loss (a learning rate too high for the data, usually)."""


class OutputError(ElboLabError, OSError):
    """An output path that cannot be written: read-only, full, a directory, owned by another run, ..."""


# errno → what the user should read (the OS's own text is kept after it)
_HINTS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted (read-only or immutable?)",
    errno.EISDIR: "it is a directory, not a file",
    errno.ENOTDIR: "a part of the path is not a directory",
    errno.ENOENT: "no such file or directory",
    errno.EEXIST: "it already exists",
    errno.ENAMETOOLONG: "the name is too long",
    errno.EMFILE: "too many open files",
}


def os_reason(exc: OSError) -> str:
    """Why an OSError happened, for a user: ``the disk is full (No space left on device)``."""
    hint = _HINTS.get(exc.errno or -1)
    reason = exc.strerror or (os.strerror(exc.errno) if exc.errno else "") or str(exc) or type(exc).__name__
    return f"{hint} ({reason})" if hint and hint.lower() != reason.lower() else reason


def os_error_message(exc: OSError, path=None, verb: str = "use") -> str:
    """One line for an :class:`OSError`: the path it concerns and the reason, e.g.
    ``cannot write runs/x/metrics.json: the disk is full (No space left on device)``."""
    if isinstance(exc, ElboLabError):
        return _one_line(str(exc))
    where = path if path is not None else exc.filename
    if path is None and exc.filename is not None and exc.filename2 is not None:
        where = f"{exc.filename} -> {exc.filename2}"
    reason = os_reason(exc)
    return _one_line(f"cannot {verb} {where}: {reason}" if where is not None else reason)


def user_message(exc: BaseException) -> str | None:
    """The one-line message for an exception a user can cause, or None for a bug (which keeps its traceback)."""
    if isinstance(exc, ElboLabError):
        return _one_line(str(exc))
    if isinstance(exc, OSError):
        return os_error_message(exc)
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError
        return "out of memory: use smaller data, a smaller --batch-size/--budget/--n, or a machine with more memory"
    return None


def _one_line(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= 400 else text[:397] + "..."

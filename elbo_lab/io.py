"""Files and output directories, written so that nothing already on disk is lost.

- Atomic writes: a temporary file in the same directory, flushed and fsync-ed, then ``os.replace`` onto the
  target; a crash, a kill -9 or a full disk never leaves a half file, and a failed write removes its temporary.
  Temporaries are created with mode 0666 minus the umask (the user's normal permissions, not mkstemp's 0600).
  Checkpoints are serialised in memory first, so a full disk is an ``OSError`` (ENOSPC), not torch's opaque
  RuntimeError.  Every failure is an :class:`~elbo_lab.errors.OutputError` naming the file.
- :func:`check_output_file`: an output file's path is checked (not a directory, its folder writable) before
  any work starts, so ``bound --json DIR`` fails in a second, not after the computing.
- :func:`claim_output_dir`: an output directory belongs to one run of one tool -- a marker file ``run.json``
  (``{"tool": ..., <config>}``) and an exclusive ``flock`` on the directory while a process writes to it.  A
  non-empty directory without the marker is refused (a user's files are never overwritten); so is a directory of
  another tool or config, and a second concurrent writer.  ``run``, ``train vae`` and ``train ddpm`` use it.
- :func:`load_checkpoint_file`: the one safe checkpoint reader (``torch.load(weights_only=True)``).

Tests: ``tests/test_reliability.py`` (read-only and immutable paths, a full disk, foreign and concurrent
writers, permissions).
"""

from __future__ import annotations

import errno
import fcntl
import io
import json
import os
import secrets
import weakref
from collections.abc import Callable
from pathlib import Path

from .errors import CheckpointError, ElboLabError, OutputError, os_error_message, os_reason

__all__ = [
    "MARKER",
    "OutputDir",
    "atomic_torch_save",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "check_output_file",
    "claim_output_dir",
    "load_checkpoint_file",
]

MARKER = "run.json"  # marks an output directory as written by elbo-lab (its "tool" says which command)


# ---------------------------------------------------------------------------------------------- atomic writes


def _temp_path(path: Path) -> Path:
    return path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"


def _create_new(tmp: Path) -> int:
    """A new, exclusive file with mode 0666 & ~umask (what ``open(..., "w")`` gives)."""
    return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _is_temp(name: str) -> bool:
    return name.startswith(".") and name.endswith(".tmp")


def atomic_write(path: str | Path, writer: Callable[[str], None] | bytes) -> Path:
    """Write ``path`` atomically: ``writer(tmp_path)`` fills a temporary file (or ``writer`` is the bytes), which
    is fsync-ed and renamed onto ``path``.  Any OSError becomes an :class:`OutputError` naming ``path``."""
    path = Path(path)
    try:
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _temp_path(path)
        fd = _create_new(tmp)
        try:
            try:
                if isinstance(writer, (bytes, bytearray, memoryview)):
                    _write_all(fd, bytes(writer))
                else:
                    os.close(fd)
                    fd = -1
                    writer(str(tmp))
                    fd = os.open(tmp, os.O_RDONLY)
                os.fsync(fd)
            finally:
                if fd >= 0:
                    os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
    except ElboLabError:
        raise
    except OSError as exc:
        raise OutputError(os_error_message(exc, path, "write")) from None
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n")


def atomic_torch_save(path: str | Path, obj) -> Path:
    """``torch.save`` into memory, then an atomic write (a full disk is then a plain ENOSPC OSError)."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write(path, buf.getbuffer())


# ---------------------------------------------------------------------------------------------- output paths


def _probe_dir(d: Path) -> None:
    """Create and remove an empty file in directory ``d``: the real test of writability (root ignores modes;
    read-only mounts, immutable directories and exhausted inodes do not)."""
    tmp = d / f".elbo-lab-probe.{secrets.token_hex(4)}.tmp"
    os.close(_create_new(tmp))
    os.unlink(tmp)


def check_output_file(path: str | Path, option: str = "--out") -> Path:
    """Refuse, before any work, an output file that could not be written: a directory, a path through a file,
    or a folder that is read-only, immutable or otherwise unwritable (:class:`OutputError`, one line)."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{option} {path} is a directory; give a file name")
    parent = path.parent
    while not parent.exists():  # the nearest existing folder (missing ones are created when writing)
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"{option} {path}: {parent} is a file, not a directory")
    try:
        _probe_dir(parent)
    except OSError as exc:
        raise OutputError(f"{option} {path}: cannot write in {parent}: {os_reason(exc)}") from None
    return path


class OutputDir:
    """A claimed output directory (see :func:`claim_output_dir`); releases its lock on :meth:`release`, on
    leaving a ``with`` block, or when garbage-collected (the OS drops it when the process dies, even on kill -9)."""

    def __init__(self, path: Path, fd: int | None):
        self.path, self._fd = path, fd
        self._finalizer = weakref.finalize(self, _close, fd)

    def release(self) -> None:
        self._finalizer()

    def __enter__(self) -> OutputDir:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _close(fd: int | None) -> None:
    if fd is not None:
        try:
            os.close(fd)  # closing the descriptor drops the flock
        except OSError:
            pass


def _foreign_entries(out: Path) -> list[str]:
    """Names in ``out`` other than the marker, elbo-lab temporaries and empty folders."""
    names = []
    for p in out.iterdir():
        if p.name == MARKER or _is_temp(p.name):
            continue
        if p.is_dir() and not p.is_symlink() and not any(p.iterdir()):
            continue
        names.append(p.name)
    return names


def _inspect(out: Path, tool: str, config: dict, legacy: tuple[str, ...]) -> None:
    """Refuse ``out`` unless it is absent, empty, or holds this tool's run with this config (no writes)."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} exists and is not a directory")
    if not out.exists():
        return
    marker = out / MARKER
    if not marker.exists():
        entries = _foreign_entries(out)
        if entries and not any(name in entries for name in legacy):
            raise OutputError(
                f"--out {out} is not empty ({entries[0]}{', ...' if len(entries) > 1 else ''}) and was not "
                f"written by `{tool}`; choose another --out"
            )
        return
    try:
        old = json.loads(marker.read_text(encoding="utf-8"))
        if not isinstance(old, dict):
            raise ValueError
    except (OSError, ValueError):
        raise OutputError(f"{marker} is unreadable; choose another --out") from None
    if old.get("tool", "elbo-lab run") != tool:
        raise OutputError(f"--out {out} holds an `{old.get('tool')}` run, not `{tool}`; choose another --out")
    if {k: old.get(k) for k in config} != config:
        raise OutputError(
            f"--out {out} holds a run with { ({k: old.get(k) for k in config}) }; this one is {config}: "
            "choose another --out"
        )


def claim_output_dir(
    out: str | Path, *, tool: str, config: dict | None = None, legacy: tuple[str, ...] = ()
) -> OutputDir:
    """Make ``out`` this run's directory: refuse a file, a non-empty directory without the marker (unless it
    holds one of the ``legacy`` files this tool wrote before markers existed), another tool's or another config's
    run, or a directory another process is writing to (flock); then write the marker ``run.json`` with
    ``{"tool": tool, **config}``.  Returns the held :class:`OutputDir` (release it when done)."""
    out, config = Path(out), dict(config or {})
    _inspect(out, tool, config, legacy)  # refuse before writing anything
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(out, os.O_RDONLY)
    except OSError as exc:
        raise OutputError(f"cannot write to --out {out}: {os_reason(exc)}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise OutputError(
            f"--out {out} is in use by another elbo-lab process; wait for it to finish or choose another --out"
        ) from None
    except OSError:  # a file system without locks: go on unlocked
        pass
    handle = OutputDir(out, fd)
    try:
        _inspect(out, tool, config, legacy)  # again under the lock (another process may have just claimed it)
        marker = {"tool": tool, **config}
        try:
            current = json.loads((out / MARKER).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            current = None
        if current != marker:
            atomic_write_json(out / MARKER, marker)
    except BaseException:
        handle.release()
        raise
    return handle


# ---------------------------------------------------------------------------------------------- checkpoints


def load_checkpoint_file(
    path: str | Path, *, format: str, version: int, required: tuple[str, ...], what: str, map_location="cpu"
) -> dict:
    """Read a checkpoint safely (``torch.load(weights_only=True)``: plain tensors and Python values, never
    arbitrary pickles) and check its ``format`` tag, ``version`` and ``required`` keys.

    Raises :class:`~elbo_lab.errors.CheckpointError` (one line: corrupt, foreign, too new or incomplete).
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except MemoryError:
        raise
    except Exception as exc:  # corrupt, truncated, or a pickle that is not plain data
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({first[:160]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != format:
        raise CheckpointError(f"{path}: not an elbo-lab {what} checkpoint")
    if ckpt.get("version") != version:
        raise CheckpointError(f"{path}: checkpoint version {ckpt.get('version')!r}, this elbo-lab reads {version}")
    missing = [k for k in required if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: incomplete checkpoint (missing {', '.join(missing)})")
    return ckpt

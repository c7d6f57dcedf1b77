"""Atomic file writes (temp file in the same directory + ``os.replace``): a crash never leaves a half file."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "atomic_torch_save",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "load_checkpoint_file",
]


def atomic_write(path: str | Path, writer: Callable[[str], None]) -> Path:
    """Call ``writer(tmp_path)`` then rename the temporary file onto ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        writer(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | Path, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n")


def atomic_torch_save(path: str | Path, obj) -> Path:
    import torch

    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def load_checkpoint_file(
    path: str | Path, *, format: str, version: int, required: tuple[str, ...], what: str, map_location="cpu"
) -> dict:
    """Read a checkpoint safely (``torch.load(weights_only=True)``: plain tensors and Python values, never
    arbitrary pickles) and check its ``format`` tag, ``version`` and ``required`` keys.

    Raises :class:`~elbo_lab.errors.CheckpointError` (one line: corrupt, foreign, too new or incomplete).
    """
    import torch

    from .errors import CheckpointError

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
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

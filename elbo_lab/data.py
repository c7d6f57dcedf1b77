"""Datasets: scikit-learn's digits by default (ships with scikit-learn, no download) or a user's array file.

Every dataset is returned as float tensors in [−1, 1] on a grid of K = ``levels`` equally spaced values
(bins of width 2/(K − 1)), shaped (N, C, H, W) for images or (N, D) for vectors, with a fixed seeded
train/test split.  Digits: 1,797 images of 8×8 pixels with 17 grey levels (0..16), split 1,437 / 360.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import DataError

__all__ = ["Dataset", "load_data", "load_digits", "from_levels", "to_levels"]

DIGITS_LEVELS = 17
DEFAULT_SPLIT_SEED = 0
TEST_FRACTION = 0.2


@dataclass
class Dataset:
    """Train and test tensors in [−1, 1] on ``levels`` grey levels; ``shape`` is one example's shape."""

    name: str
    train: torch.Tensor  # (N_train, *shape)
    test: torch.Tensor  # (N_test, *shape)
    levels: int

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.train.shape[1:])

    @property
    def dim(self) -> int:
        """D: the number of scalar values per example (bits/dim = nats / (D ln 2))."""
        return int(np.prod(self.shape))

    @property
    def is_image(self) -> bool:
        return len(self.shape) == 3

    def describe(self) -> str:
        return f"{self.name}: {len(self.train)} train / {len(self.test)} test, shape {self.shape}, {self.levels} levels"


def from_levels(v: np.ndarray | torch.Tensor, levels: int):
    """Integer level v ∈ {0, …, K−1} → x = 2v/(K−1) − 1 ∈ [−1, 1]."""
    return 2.0 * v / (levels - 1) - 1.0


def to_levels(x: torch.Tensor, levels: int) -> torch.Tensor:
    """x ∈ [−1, 1] → nearest integer level in {0, …, K−1} (the inverse of :func:`from_levels`)."""
    return torch.clamp(torch.round((x + 1.0) * (levels - 1) / 2.0), 0, levels - 1).long()


def _split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n)
    n_test = int(np.ceil(n * TEST_FRACTION))
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def load_digits(*, seed: int = DEFAULT_SPLIT_SEED, dtype=torch.float32) -> Dataset:
    """scikit-learn's 8×8 digits, 17 levels, as (N, 1, 8, 8) in [−1, 1]; fixed split 1,437 / 360."""
    from sklearn.datasets import load_digits as _load

    images = _load().images.astype(np.float64)  # (1797, 8, 8), integer values 0..16
    x = from_levels(images, DIGITS_LEVELS)[:, None]
    tr, te = _split(len(x), seed)
    t = torch.as_tensor(x, dtype=dtype)
    return Dataset("digits", t[tr].contiguous(), t[te].contiguous(), DIGITS_LEVELS)


def _read_array(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a .npy (one array) or .npz (``train``/``test``, or ``x``, or its only array); never unpickles."""
    if not path.exists():
        raise DataError(f"data file not found: {path}")
    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False), None
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                keys = list(z.keys())
                if "train" in keys and "test" in keys:
                    return z["train"], z["test"]
                if "x" in keys:
                    return z["x"], None
                if len(keys) == 1:
                    return z[keys[0]], None
                raise DataError(
                    f"{path}: .npz must hold 'train' and 'test', or 'x', or exactly one array; found {keys}"
                )
    except DataError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path}: not a readable numpy array file ({exc})") from None
    raise DataError(f"{path}: unsupported data file type {path.suffix!r} (use .npy or .npz)")


def _to_unit_range(a: np.ndarray, levels: int | None, where: str) -> tuple[np.ndarray, int]:
    if a.dtype == object or not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise DataError(f"{where}: expected a numeric array, got dtype {a.dtype}")
    if a.size == 0:
        raise DataError(f"{where}: the array is empty")
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)):
        raise DataError(f"{where}: contains NaN or Inf")
    if a.min() >= 0 and np.all(a == np.round(a)) and a.max() > 1:
        # integer levels 0..K-1
        k = int(levels or (a.max() + 1))
        if a.max() > k - 1:
            raise DataError(f"{where}: values up to {int(a.max())} but only {k} levels declared (0..{k - 1})")
        return from_levels(a, k), k
    if a.min() < -1 - 1e-9 or a.max() > 1 + 1e-9:
        raise DataError(
            f"{where}: values in [{a.min():.4g}, {a.max():.4g}]; expected integer levels 0..K-1 or floats in [-1, 1]"
        )
    k = int(levels or 256)
    grid = (a + 1.0) * (k - 1) / 2.0
    off = np.abs(grid - np.round(grid)).max()
    if off > 1e-4:
        raise DataError(
            f"{where}: values are not on a grid of {k} levels in [-1, 1] (off by up to {off:.3g} bins); "
            "pass the right --levels"
        )
    return from_levels(np.round(grid), k), k


def _shape_examples(a: np.ndarray, where: str) -> np.ndarray:
    if a.ndim == 2:  # (N, D) vectors
        return a
    if a.ndim == 3:  # (N, H, W) grey images
        return a[:, None]
    if a.ndim == 4:  # (N, C, H, W) or (N, H, W, C)
        if a.shape[1] in (1, 3, 4):
            return a
        if a.shape[3] in (1, 3, 4):
            return np.transpose(a, (0, 3, 1, 2))
    raise DataError(f"{where}: expected shape (N, D), (N, H, W) or (N, C, H, W); got {a.shape}")


def load_array_file(
    path: str | Path, *, levels: int | None = None, seed: int = DEFAULT_SPLIT_SEED, dtype=torch.float32
) -> Dataset:
    """A user's ``.npy``/``.npz`` file as a :class:`Dataset` (checked: shape, range, levels)."""
    path = Path(path)
    train, test = _read_array(path)
    train, k = _to_unit_range(train, levels, str(path))
    train = _shape_examples(train, str(path))
    if len(train) < 2:
        raise DataError(f"{path}: need at least 2 examples, got {len(train)}")
    if test is None:
        tr, te = _split(len(train), seed)
        train, test = train[tr], train[te]
    else:
        test, k2 = _to_unit_range(test, k, f"{path}[test]")
        test = _shape_examples(test, f"{path}[test]")
        if test.shape[1:] != train.shape[1:]:
            raise DataError(f"{path}: train examples have shape {train.shape[1:]}, test {test.shape[1:]}")
    return Dataset(path.stem, torch.as_tensor(train, dtype=dtype), torch.as_tensor(test, dtype=dtype), k)


def load_data(
    spec: str = "digits", *, levels: int | None = None, seed: int = DEFAULT_SPLIT_SEED, dtype=torch.float32
) -> Dataset:
    """``"digits"`` (the built-in default) or a path to a ``.npy``/``.npz`` file."""
    if spec == "digits":
        return load_digits(seed=seed, dtype=dtype)
    return load_array_file(spec, levels=levels, seed=seed, dtype=dtype)

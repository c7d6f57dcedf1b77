"""Datasets: scikit-learn's digits by default (ships with scikit-learn, no download) or a user's array file.

Every dataset is returned as float tensors in [−1, 1] on a grid of K = ``levels`` equally spaced values
(bins of width 2/(K − 1)), shaped (N, C, H, W) for images or (N, D) for vectors, with a fixed seeded
train/test split.  Digits: 1,797 images of 8×8 pixels with 17 grey levels (0..16), split 1,437 / 360.
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import DataError

__all__ = ["Dataset", "load_data", "load_digits", "from_levels", "to_levels"]

DIGITS_LEVELS = 17
MAX_LEVELS = 65_536  # = elbo_lab.options.MAX_LEVELS
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


MAX_VALUES = 2**30  # values per array (8 GiB as float64): a larger header is refused before anything is allocated


def _check_header(shape, dtype, where: str, available: int | None) -> None:
    """Refuse an array whose header claims more values than :data:`MAX_VALUES` or more bytes than the file holds."""
    n = math.prod(int(d) for d in shape)
    if n > MAX_VALUES:
        raise DataError(f"{where}: the header claims shape {tuple(shape)} ({n:.3g} values); at most {MAX_VALUES:,}")
    if available is not None and n * np.dtype(dtype).itemsize > available:
        raise DataError(f"{where}: the header claims shape {tuple(shape)} but the file is too short (truncated?)")


def _npy_header(f) -> tuple:
    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _fortran, dtype = read(f)
    return shape, dtype


def _read_npy(path: Path) -> np.ndarray:
    with open(path, "rb") as f:
        shape, dtype = _npy_header(f)
        _check_header(shape, dtype, str(path), path.stat().st_size - f.tell())
    return np.load(path, allow_pickle=False)


def _read_npz_member(z, path: Path, key: str) -> np.ndarray:
    info = z.zip.getinfo(key + ".npy")
    with z.zip.open(info) as f:
        shape, dtype = _npy_header(f)
        _check_header(shape, dtype, f"{path}[{key}]", info.file_size)
    return z[key]


def _read_array(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a .npy (one array) or .npz (``train``/``test``, or ``x``, or its only array); never unpickles.
    The header is read first: a claimed size beyond :data:`MAX_VALUES` or the file's length is refused
    before any allocation."""
    if not path.exists():
        raise DataError(f"data file not found: {path}")
    if path.is_dir():
        raise DataError(f"{path} is a directory, not a .npy/.npz file")
    try:
        if path.suffix == ".npy":
            return _read_npy(path), None
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                keys = list(z.keys())
                if "train" in keys and "test" in keys:
                    return _read_npz_member(z, path, "train"), _read_npz_member(z, path, "test")
                if "x" in keys:
                    return _read_npz_member(z, path, "x"), None
                if len(keys) == 1:
                    return _read_npz_member(z, path, keys[0]), None
                raise DataError(
                    f"{path}: .npz must hold 'train' and 'test', or 'x', or exactly one array; found {keys}"
                )
    except DataError:
        raise
    except (ValueError, OSError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path}: not a readable numpy array file ({' '.join(str(exc).split())[:160]})") from None
    raise DataError(f"{path}: unsupported data file type {path.suffix!r} (use .npy or .npz)")


def _to_unit_range(a: np.ndarray, levels: int | None, where: str) -> tuple[np.ndarray, int]:
    """Integer levels 0..K−1 (an integer or boolean array, or whole numbers above 1, or whole numbers that are not
    on the [−1, 1] grid of the given ``levels``: {0, 1} with K = 2) or floats in [−1, 1] on a grid of K levels."""
    is_int = a.dtype == bool or np.issubdtype(a.dtype, np.integer)
    if a.dtype == object or not (is_int or np.issubdtype(a.dtype, np.floating)):
        raise DataError(f"{where}: expected a numeric array, got dtype {a.dtype}")
    if a.size == 0:
        raise DataError(f"{where}: the array is empty")
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)):
        raise DataError(f"{where}: contains NaN or Inf")
    lo, hi = a.min(), a.max()
    whole = lo >= 0 and bool(np.all(a == np.round(a)))
    if whole and (is_int or hi > 1 or (levels is not None and not _on_grid(a, levels))):
        # integer levels 0..K-1 (all-zero images: K = 2 unless --levels says more)
        k = int(levels if levels is not None else max(hi + 1, 2))
        if k > MAX_LEVELS:
            raise DataError(
                f"{where}: values up to {int(hi):,} mean {k:,} levels; at most {MAX_LEVELS:,} are supported"
            )
        if hi > k - 1:
            raise DataError(f"{where}: values up to {int(hi)} but only {k} levels declared (0..{k - 1})")
        return from_levels(a, k), k
    if lo < -1 - 1e-9 or hi > 1 + 1e-9:
        raise DataError(f"{where}: values in [{lo:.4g}, {hi:.4g}]; expected integer levels 0..K-1 or floats in [-1, 1]")
    k = int(levels or 256)
    grid = (a + 1.0) * (k - 1) / 2.0
    off = np.abs(grid - np.round(grid)).max()
    if off > 1e-4:
        raise DataError(
            f"{where}: values are not on a grid of {k} levels in [-1, 1] (off by up to {off:.3g} bins); "
            "pass the right --levels"
        )
    return from_levels(np.round(grid), k), k


def _on_grid(a: np.ndarray, k: int) -> bool:
    """Whether floats in [−1, 1] lie on the grid of k levels."""
    if a.min() < -1 - 1e-9 or a.max() > 1 + 1e-9:
        return False
    grid = (a + 1.0) * (k - 1) / 2.0
    return bool(np.abs(grid - np.round(grid)).max() <= 1e-4)


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
    if levels is not None and not 2 <= levels <= MAX_LEVELS:
        raise DataError(f"--levels must lie in 2..{MAX_LEVELS:,}, got {levels}")
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

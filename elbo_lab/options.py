"""The documented range of every numeric option, in one table, checked before any work starts.

The CLI uses :func:`arg` as the argparse ``type`` (a bad value is a one-line usage error, exit 2, before anything
is loaded or written); the library's configs (``ddpm.TrainConfig.validate``, ``vae.TrainConfig``) call
:func:`check` with the same table, so the API refuses the same values.  The upper limits keep memory and time
bounded (a diffusion of T steps holds O(T) schedule tensors per call; a bound budget of M steps per image holds
N·M terms): T ≤ :data:`MAX_T`, ``bound --budget`` ≤ :data:`MAX_BUDGET`.  Floats must be finite.
Tests: ``tests/test_reliability.py`` (every row refused at both ends).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

from .errors import OptionError

__all__ = ["MAX_BUDGET", "MAX_LEVELS", "MAX_T", "RANGES", "Range", "arg", "check", "describe"]

MAX_T = 10_000  # diffusion steps
MAX_BUDGET = 10_000  # timesteps per image for the sampled bound estimators
MAX_LEVELS = 65_536  # grey levels of a data file (16-bit data)
MAX_SEED = 2**63 - 16  # seeds are offset by small constants for independent streams


@dataclass(frozen=True)
class Range:
    """``lo ≤ x ≤ hi`` (``lo_open``/``hi_open``: strict); ``kind`` int or float (floats must be finite)."""

    kind: type
    lo: float
    hi: float
    lo_open: bool = False
    hi_open: bool = False
    even: bool = False

    def contains(self, x) -> bool:
        if self.kind is float and not math.isfinite(x):
            return False
        above = x > self.lo if self.lo_open else x >= self.lo
        below = x < self.hi if self.hi_open else x <= self.hi
        return above and below and (not self.even or x % 2 == 0)

    def text(self) -> str:
        def num(v):
            return f"{int(v):,}" if self.kind is int else f"{v:g}"

        what = "an even integer" if self.even else ("an integer" if self.kind is int else "a finite number")
        return f"{what} in {'(' if self.lo_open else '['}{num(self.lo)}, {num(self.hi)}{')' if self.hi_open else ']'}"


def _i(lo, hi, **kw) -> Range:
    return Range(int, lo, hi, **kw)


def _f(lo, hi, **kw) -> Range:
    return Range(float, lo, hi, **kw)


# option (its --name with dashes as underscores) -> documented range
RANGES: dict[str, Range] = {
    # common
    "seed": _i(0, MAX_SEED),
    "levels": _i(2, MAX_LEVELS),
    "batch_size": _i(1, 8192),
    "lr": _f(0, 10, lo_open=True),
    "threads": _i(0, 4096),  # torch intra-op threads (0: torch's default)
    # train ddpm
    "T": _i(2, MAX_T),
    "beta_start": _f(0, 1, lo_open=True, hi_open=True),
    "beta_end": _f(0, 1, lo_open=True, hi_open=True),
    "cosine_s": _f(0, 1, hi_open=True),
    "steps": _i(1, 10**9),
    "minutes": _f(0, 10**6, lo_open=True),  # about two years
    "weight_decay": _f(0, 100),
    "grad_clip": _f(0, 1e6),
    "ema_decay": _f(0, 1, hi_open=True),
    "hybrid_lambda": _f(0, 1e6),
    "sampler_mix": _f(0, 1),
    "base_channels": _i(1, 1024),
    "num_res_blocks": _i(1, 16),
    "dropout": _f(0, 1, hi_open=True),
    "eval_every": _i(1, 10**9),
    "log_every": _i(1, 10**9),
    "val_samples": _i(2, MAX_BUDGET),
    "val_fraction": _f(0, 1, lo_open=True, hi_open=True),
    # bound / sample
    "budget": _i(2, MAX_BUDGET),
    "bound_n": _i(2, 10**7),
    "sample_n": _i(1, 4096),
    # train vae
    "epochs": _i(1, 100_000),
    "latent": _i(1, 4096),
    "hidden": _i(1, 16_384),
    "depth": _i(1, 64),
    "patience": _i(1, 100_000),
    "iwae_k": _i(1, 1_000_000),
    "eval_samples": _i(2, 1_000_000),
    "val_samples_vae": _i(1, 1_000_000),
}


def describe(name: str) -> str:
    """'an integer in [2, 10,000]' for the help text."""
    return RANGES[name].text()


def check(name: str, value, *, flag: str | None = None):
    """``value`` if it lies in the documented range of option ``name``, else :class:`OptionError` (one line)."""
    r = RANGES[name]
    flag = flag or "--" + name.replace("_", "-").removesuffix("-vae")
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and r.kind is int:
        ok = float(value).is_integer()
    if not ok or not r.contains(value):
        raise OptionError(f"{flag} must be {r.text()}, got {value!r}")
    return r.kind(value)


def arg(name: str, *, flag: str | None = None):
    """An argparse ``type=`` for option ``name``: parses and range-checks (ArgumentTypeError → usage error)."""
    r = RANGES[name]

    def parse(text: str):
        try:
            value = int(text) if r.kind is int else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {r.text()}, got {text!r}") from None
        try:
            return check(name, value, flag=flag)
        except OptionError:
            raise argparse.ArgumentTypeError(f"expected {r.text()}, got {text!r}") from None

    parse.__name__ = name  # argparse names the type in its message
    return parse

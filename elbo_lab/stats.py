"""Dataset averages with standard errors, in nats and bits/dim.

Units: a per-example value is a log-likelihood or a lower bound on one (an ELBO: ≤ log p_θ(x)), in nats.
Its negation divided by D ln 2 is a negative-log-likelihood (upper) bound in bits/dim:
bits/dim = −nats / (D ln 2).  Averages and standard errors are accumulated in float64.
Test: ``tests/test_vae.py`` (``test_estimate_units``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["Estimate", "bits_per_dim", "logmeanexp", "summarize"]


def bits_per_dim(nats: float | torch.Tensor, dim: int):
    """Negative-log-likelihood in bits/dim from a log-likelihood (or ELBO) in nats: −nats / (D ln 2)."""
    return -nats / (dim * math.log(2.0))


def logmeanexp(a: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """log((1/k) Σ exp a) along ``dim`` (k = a.shape[dim]), computed stably; float64 in, float64 out."""
    return torch.logsumexp(a, dim=dim) - math.log(a.shape[dim])


def _finite_or_none(v: float) -> float | None:
    return v if math.isfinite(v) else None  # JSON has no NaN: a single example has no standard error


@dataclass(frozen=True)
class Estimate:
    """The mean over N examples of per-example log-likelihood bounds, with its standard error.

    ``nats``: mean per-example value in nats (an ELBO, IWAE bound or exact log-likelihood: ≤ or = log p_θ(x)).
    ``nats_stderr``: sample standard deviation over the examples / √N -- it contains both the Monte Carlo noise
    of the estimator and the spread between examples (the error of the dataset average as an estimate of the
    population mean).  ``bits_per_dim`` is the corresponding negative-log-likelihood bound: −nats / (D ln 2).
    """

    nats: float
    nats_stderr: float
    dim: int
    n: int

    @property
    def bits_per_dim(self) -> float:
        return float(bits_per_dim(self.nats, self.dim))

    @property
    def bits_per_dim_stderr(self) -> float:
        return self.nats_stderr / (self.dim * math.log(2.0))

    def to_dict(self) -> dict:
        return {
            "nats": self.nats,
            "nats_stderr": _finite_or_none(self.nats_stderr),
            "bits_per_dim": self.bits_per_dim,
            "bits_per_dim_stderr": _finite_or_none(self.bits_per_dim_stderr),
            "n": self.n,
            "dim": self.dim,
        }

    def __str__(self) -> str:
        bpd = f"{self.bits_per_dim:.4f} ± {self.bits_per_dim_stderr:.4f} bits/dim"
        return f"{bpd} ({self.nats:.3f} ± {self.nats_stderr:.3f} nats)"


def summarize(values: torch.Tensor, dim: int) -> Estimate:
    """Mean and standard error (std / √N, float64) of per-example values ``(N,)`` in nats; D = ``dim``."""
    v = torch.as_tensor(values).detach().to(torch.float64).reshape(-1)
    if v.numel() == 0:
        raise ValueError("cannot summarize an empty set of values")
    if not torch.isfinite(v).all():
        raise ValueError("non-finite per-example values (NaN or Inf) in an estimate")
    n = v.numel()
    stderr = float(v.std(unbiased=True) / math.sqrt(n)) if n > 1 else float("nan")
    return Estimate(float(v.mean()), stderr, int(dim), n)

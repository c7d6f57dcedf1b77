"""Oracles: data and models whose exact answers are known, to check the numeric engine against.

- :class:`GaussianData` -- Gaussian data N(m, S) in D dimensions under a noise schedule: the optimal (MMSE)
  ε-predictor, the closed-form expected bound of the DDPM that uses it (per step, per image and over the data),
  that model's own exact log p_θ(x_0) (its reverse chain is linear-Gaussian), and the data entropy.
- :class:`GaussianMixture` / :class:`GaussianMixture2D` -- a Gaussian mixture with its analytic optimal
  ε-predictor, exact log-density and sampling.

Units: nats; bits/dim = nats / (D ln 2).  Time convention: code index k = 0..T−1 stands for the paper's step
t = k + 1.  Tests: ``tests/test_oracles.py``.
"""

from .gaussian import GaussianData, OracleBound, ReverseChain, format_gap_table, gap_vs_T
from .mixture import GaussianMixture, GaussianMixture2D

__all__ = [
    "GaussianData",
    "GaussianMixture",
    "GaussianMixture2D",
    "OracleBound",
    "ReverseChain",
    "format_gap_table",
    "gap_vs_T",
]

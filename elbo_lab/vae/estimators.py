"""Estimators of log p(x) for a latent-variable model with Gaussian q(z|x) and prior p(z) = N(0, I), in nats.

Guide section: "The VAE route".  Derivation E3 ``vae_elbo``: log p(x) = ELBO + KL(q(z|x) ‖ p(z|x)), and
ELBO = E_q[log p(x|z)] − KL(q(z|x) ‖ p(z)).  Every estimator here is a *lower* bound on log p_θ(x) (an ELBO) in
nats per example; −value / (D ln 2) is a negative-log-likelihood upper bound in bits/dim.

- ELBO, analytic KL: (1/S) Σ_s log p(x|z_s) − KL(q ‖ N(0, I)), the KL in closed form
  (:func:`elbo_lab.gaussian.normal_kl`, derivation E1 ``gaussian_kl`` result ``kl``, summed over latent dims).
- ELBO, sampled KL: (1/S) Σ_s [log p(x|z_s) + log p(z_s) − log q(z_s|x)] (same expectation, larger variance).
- IWAE_k: log (1/k) Σ_j p(x|z_j) p(z_j) / q(z_j|x) (Burda et al. 2016); E[IWAE_1] = ELBO,
  E[IWAE_k] ≤ E[IWAE_k'] for k ≤ k', → log p(x) as k → ∞.  Log-weights in float64, log-mean-exp over chunks.

z_s = mean + √var · ε_s, ε_s ~ N(0, I) (derivation E2 ``reparameterization``); noise only from the
``generator`` argument.  A *model* here is anything with ``encode(x) -> (mean, var)`` (B, L) each,
``log_likelihood(x, z (S, B, L)) -> (S, B)`` float64 nats, ``latent_dim`` and ``dim`` -- the VAE
(:class:`elbo_lab.vae.VAE`) and the linear-Gaussian oracle (:class:`elbo_lab.oracles.ppca.PPCA`).

Tests: ``tests/test_vae.py`` (analytic = sampled KL within 4 stderr; KL = torch.distributions = E1 lambdified;
ELBO ≤ IWAE_k ≤ IWAE_k'; all converge to the exact log p(x) of the PPCA oracle).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch

from ..gaussian import normal_kl, normal_log_prob
from ..stats import Estimate, summarize

__all__ = [
    "ESTIMATORS",
    "ElboDraws",
    "LatentVariableModel",
    "elbo",
    "elbo_draws",
    "elbo_estimates",
    "estimate",
    "iwae",
    "kl_to_standard_normal",
]

ESTIMATORS = ("elbo_analytic", "elbo_sampled_kl", "iwae")
MAX_ROWS = 16384  # decoder rows (samples × examples) per forward pass in the evaluation estimators


class LatentVariableModel(Protocol):
    latent_dim: int
    dim: int

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor: ...


def kl_to_standard_normal(mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, diag var) ‖ N(0, I)) per example: (B, L) → (B,), nats, float64.

    Derivation: E1 ``gaussian_kl`` result ``kl`` (univariate), summed over dimensions (E1's diagonal step);
    implemented once by :func:`elbo_lab.gaussian.normal_kl`.  Test: ``tests/test_vae.py::test_kl_matches``.
    """
    mean, var = mean.to(torch.float64), var.to(torch.float64)
    return normal_kl(mean, var, torch.zeros_like(mean), torch.ones_like(var)).sum(-1)


def _reparameterize(mean, var, samples: int, generator: torch.Generator | None) -> torch.Tensor:
    """z = mean + √var · ε, ε ~ N(0, I): (B, L) → (S, B, L).  Derivation: E2 ``reparameterization``."""
    eps = torch.randn((samples, *mean.shape), generator=generator, dtype=mean.dtype, device=mean.device)
    return mean + torch.sqrt(var) * eps


def _log_weights(model, x, mean, var, z) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """log p(x|z), log q(z|x), log p(z), each (S, B) float64 nats."""
    log_lik = model.log_likelihood(x, z)  # (S, B)
    z64 = z.to(torch.float64)
    log_q = normal_log_prob(z64, mean.to(torch.float64), var.to(torch.float64)).sum(-1)  # (S, B)
    log_prior = normal_log_prob(z64, torch.zeros_like(z64), torch.ones_like(z64)).sum(-1)  # (S, B)
    return log_lik, log_q, log_prior


@dataclass
class ElboDraws:
    """S reparameterized draws per example (differentiable); all (S, B) float64 nats except ``kl`` (B,)."""

    log_lik: torch.Tensor  # log p(x|z_s)
    log_q: torch.Tensor  # log q(z_s|x)
    log_prior: torch.Tensor  # log p(z_s) = log N(z_s; 0, I)
    kl: torch.Tensor  # analytic KL(q(z|x) ‖ p(z)), (B,)

    def analytic(self) -> torch.Tensor:
        """Per-draw ELBO with the analytic KL: log p(x|z_s) − KL, (S, B).  Mean over s: the ELBO estimate."""
        return self.log_lik - self.kl

    def sampled_kl(self) -> torch.Tensor:
        """Per-draw ELBO with the KL sampled: log p(x|z_s) + log p(z_s) − log q(z_s|x), (S, B) (= IWAE_1)."""
        return self.log_lik + self.log_prior - self.log_q


def elbo_draws(
    model: LatentVariableModel, x: torch.Tensor, samples: int = 1, *, generator: torch.Generator | None
) -> ElboDraws:
    """Encode x (B, ...), draw S latents per example, and return every term of both ELBO estimators."""
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    mean, var = model.encode(x)  # (B, L) each
    z = _reparameterize(mean, var, samples, generator)  # (S, B, L)
    log_lik, log_q, log_prior = _log_weights(model, x, mean, var, z)
    return ElboDraws(log_lik, log_q, log_prior, kl_to_standard_normal(mean, var))


def elbo(
    model: LatentVariableModel,
    x: torch.Tensor,
    *,
    kl: str = "analytic",
    samples: int = 1,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Per-example ELBO estimate (B,), nats (≤ log p_θ(x) in expectation); ``kl`` = "analytic" or "sampled"."""
    d = elbo_draws(model, x, samples, generator=generator)
    if kl == "analytic":
        return d.analytic().mean(0)
    if kl == "sampled":
        return d.sampled_kl().mean(0)
    raise ValueError(f"kl must be 'analytic' or 'sampled', got {kl!r}")


@torch.no_grad()
def iwae(
    model: LatentVariableModel,
    x: torch.Tensor,
    k: int,
    *,
    generator: torch.Generator | None,
    chunk: int | None = None,
) -> torch.Tensor:
    """Per-example IWAE_k = log (1/k) Σ_j w_j, w_j = p(x|z_j) p(z_j) / q(z_j|x), z_j ~ q(z|x): (B,) nats, float64.

    The k log-weights are drawn in chunks (≤ ``MAX_ROWS`` decoder rows per pass unless ``chunk`` is given) and
    combined by a float64 log-sum-exp, so memory stays bounded for any k (1 ≤ k ≤ 5000 and beyond).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    mean, var = model.encode(x)  # (B, L)
    chunk = chunk or max(1, MAX_ROWS // max(1, len(x)))
    parts = []
    done = 0
    while done < k:
        s = min(chunk, k - done)
        z = _reparameterize(mean, var, s, generator)  # (s, B, L)
        log_lik, log_q, log_prior = _log_weights(model, x, mean, var, z)
        parts.append(torch.logsumexp(log_lik + log_prior - log_q, dim=0))  # (B,)
        done += s
    return torch.logsumexp(torch.stack(parts), dim=0) - math.log(k)  # (B,)


@torch.no_grad()
def estimate(
    model: LatentVariableModel,
    data: torch.Tensor,
    estimator: str,
    *,
    generator: torch.Generator | None,
    k: int = 1000,
    samples: int = 1,
    batch_size: int | None = None,
    progress=None,
) -> tuple[Estimate, torch.Tensor]:
    """Dataset average of one estimator ("elbo_analytic", "elbo_sampled_kl" with S = ``samples`` draws per example,
    or "iwae" with ``k``) with its standard error, and the per-example values (N,) float64 nats.

    ``progress``: optional callable(n_done) invoked after each batch (e.g. a tqdm ``update``).
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    per_row = k if estimator == "iwae" else samples
    batch_size = batch_size or max(1, min(len(data), MAX_ROWS // max(1, per_row)))
    values = []
    for i in range(0, len(data), batch_size):
        xb = data[i : i + batch_size]
        if estimator == "iwae":
            v = iwae(model, xb, k, generator=generator)
        else:
            v = elbo(
                model,
                xb,
                kl="analytic" if estimator == "elbo_analytic" else "sampled",
                samples=samples,
                generator=generator,
            )
        values.append(v)
        if progress is not None:
            progress(len(xb))
    values = torch.cat(values)  # (N,)
    return summarize(values, model.dim), values


@torch.no_grad()
def elbo_estimates(
    model: LatentVariableModel,
    data: torch.Tensor,
    *,
    samples: int,
    generator: torch.Generator | None,
    batch_size: int | None = None,
    progress=None,
) -> dict:
    """Both ELBO estimators from the same S draws per example (one decoder pass for both).

    Returns ``{"elbo_analytic": Estimate, "elbo_sampled_kl": Estimate, "per_draw_variance": {"analytic": float,
    "sampled_kl": float}}``; the variances (nats², S ≥ 2) are the Monte Carlo variance of a one-draw estimate
    for one example, averaged over the examples: the sampled KL adds the noise of log q(z|x) − log p(z).
    """
    if samples < 2:
        raise ValueError(f"samples must be >= 2 to measure a variance, got {samples}")
    batch_size = batch_size or max(1, min(len(data), MAX_ROWS // samples))
    an, sa, var_an, var_sa = [], [], [], []
    for i in range(0, len(data), batch_size):
        xb = data[i : i + batch_size]
        d = elbo_draws(model, xb, samples, generator=generator)
        a, s = d.analytic(), d.sampled_kl()  # (S, B)
        an.append(a.mean(0))
        sa.append(s.mean(0))
        var_an.append(a.var(0))
        var_sa.append(s.var(0))
        if progress is not None:
            progress(len(xb))
    return {
        "elbo_analytic": summarize(torch.cat(an), model.dim),
        "elbo_sampled_kl": summarize(torch.cat(sa), model.dim),
        "per_draw_variance": {
            "analytic": float(torch.cat(var_an).mean()),
            "sampled_kl": float(torch.cat(var_sa).mean()),
        },
    }

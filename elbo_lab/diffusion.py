"""The diffusion process: forward sample, posterior, x_0 / mean prediction from ε, reverse variance, ε weights,
the sampling step.  Pure functions on tensors; one formula each, named after its derivation.

Time convention: every ``k`` below is the code index k = 0..T−1 of the paper's step t = k + 1 (improved-diffusion
/ diffusers convention).  ``k`` is an int or a (B,) long tensor matching the batch dimension of ``x`` (B, ...).
Schedule coefficients are float64; a result has the dtype of the data tensor passed in (pass float64 for
bound accumulation; float32 is fine for training and sampling).

The first step (k = 0, t = 1): β̃_1 = 0, so q(x_0|x_1, x_0) is a point mass and there is no KL term there.
The bound's t = 1 term is L_0 = −log p_θ(x_0|x_1), a *decoder* (discretized Gaussian for K-level data,
continuous Gaussian otherwise) with mean μ_θ(x_1, 1) and variance σ_1²; for σ_t² = β̃_t that variance is
the clipped β̃_2 (improved-diffusion's convention; β̃_1 = 0 would give a degenerate decoder).  Sampling adds no
noise at k = 0: the last step returns μ_θ(x_1, 1).

Tests: ``tests/test_diffusion.py`` compares each function with the lambdified SymPy results (float64,
relative error ≤ 1e-10) at random points.
"""

from __future__ import annotations

from typing import Literal

import torch

from .schedule import NoiseSchedule

__all__ = [
    "eps_weight",
    "p_sample_step",
    "predict_eps",
    "predict_x0",
    "q_marginal",
    "q_posterior",
    "q_sample",
    "reverse_mean",
    "reverse_variance",
    "reverse_variance_from_v",
    "timesteps",
]

Variance = Literal["posterior", "beta", "fixed_large"]


def timesteps(schedule: NoiseSchedule, k, batch: int | None = None) -> torch.Tensor:
    """``k`` as a long tensor on the schedule's device, checked: integer, 0 ≤ k < T, and (if ``batch`` is
    given and k is 1-D) one per example.  Code index k ↔ paper step t = k + 1."""
    return _check_k(k, schedule.T, schedule.device, batch)


def _check_k(k, T: int, device, batch: int | None) -> torch.Tensor:
    k = torch.as_tensor(k, device=device)
    if k.dtype.is_floating_point or k.dtype.is_complex or k.dtype == torch.bool:
        raise ValueError(f"timestep k must be an integer code index (0..T-1), got dtype {k.dtype}")
    if k.ndim > 1:
        raise ValueError(f"timestep k must be a scalar or a (B,) tensor, got shape {tuple(k.shape)}")
    if batch is not None and k.ndim == 1 and k.shape[0] != batch:
        raise ValueError(f"shape mismatch: {k.shape[0]} timesteps for a batch of {batch}")
    if k.numel() and (int(k.min()) < 0 or int(k.max()) >= T):
        raise ValueError(
            f"timestep out of range: k must satisfy 0 <= k < T = {T} (code index k = paper step t - 1); "
            f"got min {int(k.min())}, max {int(k.max())}"
        )
    return k.long()


def _at(values: torch.Tensor, k, like: torch.Tensor) -> torch.Tensor:
    """values[k] (float64 per-step quantity), shaped to broadcast against ``like`` (B, ...), in like's dtype."""
    k = _check_k(k, values.shape[0], values.device, like.shape[0] if like.ndim else None)
    v = values[k]
    if v.ndim == 1:
        v = v.reshape(v.shape + (1,) * (like.ndim - 1))
    return v.to(like.dtype) if like.is_floating_point() else v


def _same_shape(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: {what} have shapes {tuple(a.shape)} and {tuple(b.shape)}")


# ---------------------------------------------------------------------------------------------------------------
# Forward process and posterior
# ---------------------------------------------------------------------------------------------------------------


def q_marginal(schedule: NoiseSchedule, x0: torch.Tensor, k) -> tuple[torch.Tensor, torch.Tensor]:
    """q(x_t|x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I): returns (mean, variance); k = t − 1.

    Derivation: E5 ``forward_marginal`` results ``mean`` and ``variance``.  Test: tests/test_diffusion.py.
    """
    return _at(schedule.alpha_bars.sqrt(), k, x0) * x0, _at(schedule.one_minus_alpha_bars, k, x0)


def q_sample(schedule: NoiseSchedule, x0: torch.Tensor, k, noise: torch.Tensor) -> torch.Tensor:
    """x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε, a draw from q(x_t|x_0) for ε ~ N(0, I); k = t − 1.

    Derivation: E5 ``forward_marginal`` result ``sample``.  Test: tests/test_diffusion.py.
    """
    _same_shape(x0, noise, "x0 and noise")
    return _at(schedule.alpha_bars.sqrt(), k, x0) * x0 + _at(schedule.one_minus_alpha_bars.sqrt(), k, x0) * noise


def q_posterior(schedule: NoiseSchedule, x0: torch.Tensor, xt: torch.Tensor, k) -> tuple[torch.Tensor, torch.Tensor]:
    """q(x_{t−1}|x_t, x_0) = N(μ̃_t, β̃_t I) with μ̃_t = √ᾱ_{t−1} β_t/(1−ᾱ_t) x_0 + √α_t (1−ᾱ_{t−1})/(1−ᾱ_t) x_t;
    returns (mean, variance broadcastable to x); k = t − 1 (at k = 0: mean x_0, variance 0).

    Derivation: E6 ``posterior`` results ``mean`` (coefficients ``coef_x0``, ``coef_xt``) and ``variance``.
    Test: tests/test_diffusion.py.
    """
    _same_shape(x0, xt, "x0 and xt")
    s = schedule
    coef_x0 = s.alpha_bars_prev.sqrt() * s.betas / s.one_minus_alpha_bars
    coef_xt = s.alphas.sqrt() * s.one_minus_alpha_bars_prev / s.one_minus_alpha_bars
    mean = _at(coef_x0, k, x0) * x0 + _at(coef_xt, k, x0) * xt
    return mean, _at(s.posterior_variance, k, x0)


def predict_x0(schedule: NoiseSchedule, xt: torch.Tensor, k, eps: torch.Tensor) -> torch.Tensor:
    """x̂_0 = (x_t − √(1 − ᾱ_t) ε) / √ᾱ_t, the inverse of :func:`q_sample`; k = t − 1.

    Derivation: E6 ``posterior`` result ``x0_from_eps``.  Test: tests/test_diffusion.py.
    """
    _same_shape(xt, eps, "xt and eps")
    return (xt - _at(schedule.one_minus_alpha_bars.sqrt(), k, xt) * eps) / _at(schedule.alpha_bars.sqrt(), k, xt)


def predict_eps(schedule: NoiseSchedule, xt: torch.Tensor, k, x0: torch.Tensor) -> torch.Tensor:
    """ε = (x_t − √ᾱ_t x_0) / √(1 − ᾱ_t): the noise that maps x_0 to x_t (used to turn an x_0 prediction into ε̂);
    k = t − 1.

    Derivation: E5 ``forward_marginal`` result ``eps_from_xt``.  Test: tests/test_ddpm.py (vs. SymPy; inverts
    :func:`q_sample`).
    """
    _same_shape(xt, x0, "xt and x0")
    return (xt - _at(schedule.alpha_bars.sqrt(), k, xt) * x0) / _at(schedule.one_minus_alpha_bars.sqrt(), k, xt)


# ---------------------------------------------------------------------------------------------------------------
# Reverse process p_θ(x_{t−1}|x_t) = N(μ_θ, σ_t² I)
# ---------------------------------------------------------------------------------------------------------------


def reverse_mean(schedule: NoiseSchedule, xt: torch.Tensor, k, eps_hat: torch.Tensor) -> torch.Tensor:
    """μ_θ(x_t, t) = (x_t − β_t/√(1 − ᾱ_t) ε̂) / √α_t: the posterior mean μ̃_t in ε form with ε replaced by the
    prediction ε̂ = ε_θ(x_t, t); k = t − 1.  At k = 0 it is x̂_0, the decoder mean.

    Derivation: E6 ``posterior`` result ``mean_eps`` = E11 ``sampling_step`` result ``mean``.
    Test: tests/test_diffusion.py.
    """
    _same_shape(xt, eps_hat, "xt and eps_hat")
    s = schedule
    return (xt - _at(s.betas / s.one_minus_alpha_bars.sqrt(), k, xt) * eps_hat) / _at(s.alphas.sqrt(), k, xt)


def reverse_variance(schedule: NoiseSchedule, k=None, variance: Variance = "posterior") -> torch.Tensor:
    """σ_t² of p_θ(x_{t−1}|x_t): β̃_t (``"posterior"``, DDPM's "fixed small"), β_t (``"beta"``, also σ_1² = β_1)
    or improved-diffusion's FIXED_LARGE (``"fixed_large"``: β_t for t ≥ 2 and σ_1² = β̃_2 -- the reference's
    ``np.append(posterior_variance[1], betas[1:])``), float64, shaped like ``k`` (all T steps if k is None); k = t − 1.
    "beta" and "fixed_large" differ only in σ_1², i.e. in the decoder L_0 (and its ε weight w_1).

    At k = 0 (t = 1) β̃_1 = 0, so ``"posterior"`` returns the clipped value β̃_2 (improved-diffusion's
    ``posterior_log_variance_clipped``): it is the variance of the decoder p_θ(x_0|x_1) in L_0 and the σ_1² in the
    ε weight w_1; sampling adds no noise at k = 0 whatever σ_1² is.
    Test: tests/test_diffusion.py (β̃_t vs. E6 ``variance`` for t ≥ 2; clipping at t = 1).
    """
    if variance == "posterior":
        values = schedule.log_posterior_variance_clipped.exp()
    elif variance == "beta":
        values = schedule.betas
    elif variance == "fixed_large":
        values = torch.cat([schedule.log_posterior_variance_clipped[:1].exp(), schedule.betas[1:]])
    else:
        raise ValueError(f"variance must be 'posterior', 'beta' or 'fixed_large', got {variance!r}")
    if k is None:
        return values
    return values[timesteps(schedule, k)]


def reverse_variance_from_v(schedule: NoiseSchedule, k, v: torch.Tensor) -> torch.Tensor:
    """Learned variance (improved DDPM, Nichol & Dhariwal 2021 eq. 15): σ² = exp(v log β_t + (1 − v) log β̃_t),
    with log β̃ clipped at t = 1 as in :func:`reverse_variance`; v (B, ...) in [0, 1] is a network output; k = t − 1.

    A parameterisation, not a derived result (no SymPy derivation).  Test: v = 0 gives β̃_t, v = 1 gives β_t.
    """
    log_beta = _at(schedule.betas.log(), k, v)
    return torch.exp(v * log_beta + (1.0 - v) * _at(schedule.log_posterior_variance_clipped, k, v))


def eps_weight(schedule: NoiseSchedule, variance: Variance = "posterior") -> torch.Tensor:
    """w_t = β_t² / (2 σ_t² α_t (1 − ᾱ_t)), (T,) float64, index k = t − 1: the weight that turns the mean-matching
    KL into ‖ε − ε_θ‖² (per dimension, nats): ‖μ̃_t − μ_θ‖²/(2σ_t²) = w_t ‖ε − ε_θ(x_t, t)‖².
    With σ_t² = β̃_t (t ≥ 2) it equals ½ (SNR(t−1)/SNR(t) − 1).  At k = 0 it is the weight of the squared
    error in the continuous Gaussian decoder −log N(x_0; μ_θ(x_1, 1), σ_1²) (σ_1² from :func:`reverse_variance`).

    Derivation: E9 ``eps_weight`` results ``weight`` (and ``weight_posterior`` / ``weight_snr`` for σ² = β̃).
    Test: tests/test_diffusion.py.
    """
    s = schedule
    return eps_weight_at(s, torch.arange(s.T), reverse_variance(s, None, variance))


def eps_weight_at(schedule: NoiseSchedule, k: torch.Tensor, sigma2: torch.Tensor) -> torch.Tensor:
    """w_t = β_t² / (2 σ² α_t (1 − ᾱ_t)) at code steps ``k`` (B,) for any σ² that broadcasts against (B, ...) — the
    one implementation of E9's weight (:func:`eps_weight` is it on the fixed variances; a learned σ² per value
    gives a weight per value).  Derivation: E9 ``eps_weight`` result ``weight``.  Test: tests/test_diffusion.py
    (through :func:`eps_weight`) and tests/test_reduction.py (learned σ²)."""
    s = schedule
    shape = (-1,) + (1,) * max(sigma2.ndim - 1, 0)
    b, a, om = (v[k].reshape(shape) for v in (s.betas, s.alphas, s.one_minus_alpha_bars))
    return b**2 / (2.0 * sigma2 * a * om)


def p_sample_step(
    schedule: NoiseSchedule, xt: torch.Tensor, k, eps_hat: torch.Tensor, noise: torch.Tensor, variance="posterior"
) -> torch.Tensor:
    """One ancestral sampling step x_{t−1} = μ_θ(x_t, t) + σ_t z, z ~ N(0, I); no noise at k = 0 (t = 1);
    k = t − 1.  ``variance``: "posterior" | "beta" | a tensor σ_t² broadcastable to x (e.g. learned).

    Derivation: E11 ``sampling_step`` result ``step`` (a reparameterized draw from p_θ(x_{t−1}|x_t)).
    Test: tests/test_diffusion.py.
    """
    _same_shape(xt, noise, "xt and noise")
    mean = reverse_mean(schedule, xt, k, eps_hat)
    if torch.is_tensor(variance):
        sigma2 = variance.to(xt.dtype)
    else:
        sigma2 = _at(reverse_variance(schedule, None, variance), k, xt)
    nonzero = _at((torch.arange(schedule.T, device=schedule.device) > 0).to(torch.float64), k, xt)
    return mean + nonzero * sigma2.sqrt() * noise

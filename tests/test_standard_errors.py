"""The sampled estimators' standard errors are unbiased where the decoder term L_0 carries the variance
(elbo_lab/bound.py, ``variational_bound`` with ``exact_decoder=True``).

The coverage fixtures of tests/test_bound.py give L_0 only 6–19 % of an estimate's variance, too little to see an
error in the decoder stratum's variance var(draws)/R of its R = ``decoder_draws`` (4) ε draws.  Here the model is
exact for a single training point x* at every step t ≥ 2 up to a factor, ε̂ = c (x_t − √ᾱ_t x*)/√(1 − ᾱ_t) with c = 0.98,
and predicts ε̂ = 0 at t = 1, so the KL terms are small and L_0 is a scaled χ²: L_0 carries most of the variance
(measured below).  Every term has a closed form at x_0 = x* (σ_t² = β̃_t, Gaussian decoder, nats):

    E L_{t−1} = w_t (1 − c)² D,  w_t = β_t²/(2 β̃_t α_t (1 − ᾱ_t))           t ≥ 2   (E8, E9)
    E L_0     = (D/2) log(2π σ_1²) + (β_1/α_1) D / (2 σ_1²),  σ_1² = β̃_2         (x_0 − μ_θ(x_1) = √(β_1/α_1) ε)

so the exact expectation μ of the estimator is known.  For N independent runs on x* (one per row), an unbiased
variance estimate satisfies E[(total − μ)² − stderr²] = 0: that mean must be within 4 standard errors of 0.
"""

from __future__ import annotations

import math

import pytest
import torch

from elbo_lab.bound import prior_term, variational_bound
from elbo_lab.schedule import NoiseSchedule

F64 = torch.float64
X_STAR = torch.tensor([0.3, -0.5, 0.8], dtype=F64)
C_STEPS = 0.98
N = 4000


def _model(s: NoiseSchedule, c_steps: float):
    def eps_model(xt, k):
        ab, om = s.alpha_bars[k][:, None], s.one_minus_alpha_bars[k][:, None]
        c = torch.where(k == 0, 0.0, c_steps).to(F64)[:, None]
        return c * (xt - ab.sqrt() * X_STAR) / om.sqrt()

    return eps_model


def _exact_mean(s: NoiseSchedule, c_steps: float) -> float:
    """E[bound] at x_0 = x* in nats (closed form, module docstring)."""
    D = X_STAR.numel()
    b, a, om, pv = s.betas, s.alphas, s.one_minus_alpha_bars, s.posterior_variance
    w = b[1:] ** 2 / (2 * pv[1:] * a[1:] * om[1:])
    sig2 = float(pv[1])
    steps = float(w.sum()) * (1 - c_steps) ** 2 * D
    dec = 0.5 * D * math.log(2 * math.pi * sig2) + float(b[0] / a[0]) * D / (2 * sig2)
    return float(prior_term(s, X_STAR[None])) + steps + dec


@pytest.mark.parametrize(
    "estimator, num_samples", [("stratified", 8), ("uniform", 8), ("importance", 8)], ids=lambda v: str(v)
)
def test_stderr_unbiased_when_the_decoder_dominates(estimator, num_samples):
    s = NoiseSchedule.cosine(10)
    x = X_STAR.repeat(N, 1)
    kw = dict(estimator=estimator, num_samples=num_samples, decoder="gaussian", variance="posterior", pilot_grid=None)
    r = variational_bound(_model(s, C_STEPS), s, x, generator=0, **kw)
    mu = _exact_mean(s, C_STEPS)
    # the estimator is unbiased for the closed form ...
    assert abs(float(r.total.mean()) - mu) < 4 * float(r.total.std()) / math.sqrt(N)
    # ... and its reported variance is unbiased for its actual variance
    d = (r.total - mu) ** 2 - r.stderr**2
    z = float(d.mean()) / (float(d.std()) / math.sqrt(N))
    assert abs(z) < 4, z
    # the fixture puts most of the variance in L_0: with exact steps (c = 1) the remaining variance is L_0's
    r0 = variational_bound(_model(s, 1.0), s, x, generator=1, **kw)
    share = float(r0.total.var()) / float(r.total.var())
    assert share > 0.4, share


def test_dataset_mean_stderrs_match_the_spread_of_replicate_means():
    """mean_stderr('estimator') (fixed images, fresh steps and ε) and mean_stderr('images') (fresh images) against
    the spread of 400 replicate dataset means around the oracle's exact answers: E[(mean − E)² − se²] = 0."""
    from dataclasses import replace

    from elbo_lab.oracles.gaussian import GaussianData

    s, data = NoiseSchedule.cosine(10), GaussianData.random(3, seed=2)
    R, n = 400, 20
    eps = data.optimal_eps(s)
    kw = dict(estimator="stratified", num_samples=8, decoder="gaussian")
    x = data.sample(R * n, torch.Generator().manual_seed(7))
    cases = [
        ("images", x, float(data.expected_bound(s).total)),
        ("estimator", x[:n].repeat(R, 1), float(data.pointwise_bound(s, "posterior", x[:n]).total.mean())),
    ]
    for over, xs, exact in cases:
        r = variational_bound(eps, s, xs, generator=3, **kw)
        parts = [replace(r, total=r.total[i * n : (i + 1) * n], stderr=r.stderr[i * n : (i + 1) * n]) for i in range(R)]
        means = torch.tensor([p.mean() for p in parts], dtype=F64)
        ses = torch.tensor([p.mean_stderr(over) for p in parts], dtype=F64)
        d = (means - exact) ** 2 - ses**2
        z = float(d.mean()) / (float(d.std()) / math.sqrt(R))
        assert abs(z) < 4, (over, z)
        assert abs(float(means.mean()) - exact) < 4 * float(means.std()) / math.sqrt(R), over

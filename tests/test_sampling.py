"""The ancestral sampler honours the model's reverse variance (elbo_lab/ddpm/sampling.py, E11).

The model is the Gaussian oracle's exact (MMSE) denoiser for x_0 ~ N(m, S) (elbo_lab/oracles/gaussian.py): its
reverse chain is linear-Gaussian, so the law of what the sampler returns is known exactly.  The chain draws
x_T ~ N(0, I) and x_{t−1} = A_t x_t + c_t + σ_t z for t = T..2, and returns the decoder mean μ_θ(x_1, 1) (no noise
at t = 1), so its output is N(M, V − σ_1² I) with (M, V) the oracle's model marginal p_θ(x_0)
(``GaussianData.model_marginal``: V includes the decoder's σ_1²).  For each variance convention -- σ_t² = β̃_t,
σ_t² = β_t and a learned v -- the sample mean and covariance of 20 000 draws must lie within 4 standard errors
of that exact law, and the other conventions' laws must be rejected by a wide margin (so the test has power).

Kills the seeded bug of issue 14 "the sampler always uses σ² = β̃ whatever variance the model was trained with".
"""

from __future__ import annotations

import math

import pytest
import torch

from elbo_lab import diffusion as D
from elbo_lab.ddpm.sampling import ancestral_sample
from elbo_lab.oracles.gaussian import GaussianData
from elbo_lab.schedule import NoiseSchedule

F64 = torch.float64
N = 20_000
V_LEARNED = 0.3  # a constant learned interpolation v (σ² = exp(v log β + (1 − v) log β̃))


class OracleModel:
    """The ε-model interface ``ancestral_sample`` expects (``schedule``, ``device``, ``__call__``)."""

    def __init__(self, data: GaussianData, schedule: NoiseSchedule, learned: bool):
        self.schedule, self.device, self.learned = schedule, torch.device("cpu"), learned
        self.eps = data.optimal_eps(schedule)

    def __call__(self, xt, k):
        eps = self.eps(xt, k)
        return (eps, torch.full_like(eps, V_LEARNED)) if self.learned else eps


def _sigma2(s: NoiseSchedule, variance: str) -> torch.Tensor:
    """σ_t² (T,) per convention, written out from the schedule (β̃_1 := β̃_2, the engine's clipped decoder value)."""
    post = s.posterior_variance.clone()
    post[0] = post[1]
    if variance == "posterior":
        return post
    if variance == "beta":
        return s.betas.clone()
    return torch.exp(V_LEARNED * s.betas.log() + (1 - V_LEARNED) * post.log())


def _output_law(data: GaussianData, s: NoiseSchedule, variance: str):
    """Exact mean (D,) and covariance (D, D) of the sampler's output for this variance convention."""
    chain = data.reverse_chain(s, "posterior")  # A_t, c_t do not depend on σ_t²
    var = _sigma2(s, variance)
    if variance != "learned":  # the oracle's own marginal, where it has the convention
        M, V = data.model_marginal(s, variance)
        return M, V - var[0] * torch.eye(data.dim, dtype=F64)
    P = torch.cumprod(chain.A, 0)
    P_prev = torch.cat([torch.ones(1, data.dim, dtype=F64), P[:-1]])
    M = (P_prev * chain.c).sum(0)
    Vd = (P_prev[1:] ** 2 * var[1:, None]).sum(0) + P[-1] ** 2  # no noise at t = 1
    U = data.eigvecs
    return U @ M, (U * Vd) @ U.T


def _z_scores(x: torch.Tensor, M: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """|estimate − exact| / stderr for every mean entry and every covariance entry (centred at the exact mean)."""
    n = x.shape[0]
    d = x - M
    z_mean = d.mean(0).abs() / (d.std(0) / math.sqrt(n))
    prod = d[:, :, None] * d[:, None, :]  # (n, D, D), mean C
    z_cov = (prod.mean(0) - C).abs() / (prod.std(0) / math.sqrt(n))
    return torch.cat([z_mean.flatten(), z_cov.flatten()])


@pytest.mark.parametrize("schedule", [NoiseSchedule.linear(10, 1e-3, 0.3), NoiseSchedule.cosine(10)], ids=str)
@pytest.mark.parametrize("variance", ["posterior", "beta", "learned"])
def test_sampler_output_has_the_models_exact_law(schedule, variance):
    data = GaussianData.random(2, seed=0)
    model = OracleModel(data, schedule, learned=variance == "learned")
    g = torch.Generator().manual_seed(11)
    x = ancestral_sample(model, (2,), N, variance=variance, generator=g, dtype=F64)
    M, C = _output_law(data, schedule, variance)
    z = _z_scores(x, M, C)
    assert float(z.max()) < 4.0, z
    for other in {"posterior", "beta", "learned"} - {variance}:  # the test can tell the conventions apart
        M2, C2 = _output_law(data, schedule, other)
        assert float(_z_scores(x, M2, C2).max()) > 10.0, other


def test_sampling_step_adds_no_noise_at_t1_and_sigma_z_after():
    s = NoiseSchedule.cosine(10)
    xt, eps, z = (torch.randn(5, 3, dtype=F64, generator=torch.Generator().manual_seed(i)) for i in range(3))
    for variance in ("posterior", "beta"):
        mean = D.reverse_mean(s, xt, 0, eps)
        assert torch.equal(D.p_sample_step(s, xt, 0, eps, z, variance), mean)
        for k in (1, 5, 9):
            step = D.p_sample_step(s, xt, k, eps, z, variance)
            sigma = _sigma2(s, variance)[k].sqrt()
            torch.testing.assert_close(step, D.reverse_mean(s, xt, k, eps) + sigma * z, rtol=1e-12, atol=0)

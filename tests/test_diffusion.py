"""Diffusion process functions vs. their lambdified SymPy derivations (float64, relative error ≤ 1e-10).

Random points: a two-step schedule β = (b_1, β) evaluated at code index k = 1 (paper step t = 2), so that
ᾱ_{t−1} = 1 − b_1 ranges over (0, 1); and a one-step schedule at k = 0 (t = 1, ᾱ_0 = 1).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from elbo_lab import diffusion as D
from elbo_lab.schedule import NoiseSchedule
from elbo_lab.symbolic import reference

RTOL = 1e-10
B, DIM = 5, 3


def _close(actual: torch.Tensor, expected, scale=None) -> None:
    """|actual − expected| ≤ RTOL · max(|expected|, scale).  For a linear combination c_1 u + c_2 v, ``scale`` is
    |c_1 u| + |c_2 v| (the reference evaluated at inputs whose signs make the terms add): relative error is
    measured against the size of the summands, since a cancelling sum has no better relative accuracy."""
    expected = np.broadcast_to(expected, actual.shape)
    size = np.abs(expected) if scale is None else np.maximum(np.abs(expected), np.broadcast_to(scale, actual.shape))
    err = np.abs(actual.numpy() - expected)
    assert np.all(err <= RTOL * size), f"max relative error {np.max(err / size):.3g} > {RTOL}"


@st.composite
def points(draw):
    """(schedule, k, beta, alpha_bar_prev, x0, xt, eps, z) at a random step; arrays (B, DIM) float64."""
    beta = draw(st.floats(1e-5, 0.999))
    first = draw(st.booleans())
    if first:
        schedule, k, abp = NoiseSchedule.from_betas([beta]), 0, 1.0
    else:
        b1 = draw(st.floats(1e-5, 0.9999))
        schedule, k = NoiseSchedule.from_betas([b1, beta]), 1
        abp = schedule.alpha_bars[0].item()
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    x0, xt, eps, z = (torch.from_numpy(rng.normal(size=(B, DIM)) * rng.uniform(0.1, 3)) for _ in range(4))
    return schedule, k, beta, abp, x0, xt, eps, z


@settings(max_examples=80, deadline=None)
@given(points())
def test_forward_marginal_vs_e5(p):
    s, k, beta, abp, x0, xt, eps, z = p
    ab = s.alpha_bars[k].item()
    kk = torch.full((B,), k)
    _close(
        D.q_sample(s, x0, kk, eps),
        reference("forward_marginal", "sample", x0=x0.numpy(), eps=eps.numpy(), alpha_bar=ab),
        reference("forward_marginal", "sample", x0=x0.abs().numpy(), eps=eps.abs().numpy(), alpha_bar=ab),
    )
    mean, var = D.q_marginal(s, x0, kk)
    _close(mean, reference("forward_marginal", "mean", x0=x0.numpy(), alpha_bar=ab))
    _close(var.expand_as(x0), reference("forward_marginal", "variance", alpha_bar=ab))


@settings(max_examples=80, deadline=None)
@given(points())
def test_posterior_vs_e6(p):
    s, k, beta, abp, x0, xt, eps, z = p
    kk = torch.full((B,), k)
    mean, var = D.q_posterior(s, x0, xt, kk)
    _close(
        mean,
        reference("posterior", "mean", x0=x0.numpy(), xt=xt.numpy(), beta=beta, alpha_bar_prev=abp),
        reference("posterior", "mean", x0=x0.abs().numpy(), xt=xt.abs().numpy(), beta=beta, alpha_bar_prev=abp),
    )
    _close(var.expand_as(x0), reference("posterior", "variance", beta=beta, alpha_bar_prev=abp))
    _close(
        D.predict_x0(s, xt, kk, eps),
        reference("posterior", "x0_from_eps", xt=xt.numpy(), eps=eps.numpy(), beta=beta, alpha_bar_prev=abp),
        reference(
            "posterior", "x0_from_eps", xt=xt.abs().numpy(), eps=-eps.abs().numpy(), beta=beta, alpha_bar_prev=abp
        ),
    )
    _close(
        D.reverse_mean(s, xt, kk, eps),
        reference("posterior", "mean_eps", xt=xt.numpy(), eps=eps.numpy(), beta=beta, alpha_bar_prev=abp),
        reference("posterior", "mean_eps", xt=xt.abs().numpy(), eps=-eps.abs().numpy(), beta=beta, alpha_bar_prev=abp),
    )


@settings(max_examples=80, deadline=None)
@given(points())
def test_sampling_step_vs_e11(p):
    s, k, beta, abp, x0, xt, eps, z = p
    kk = torch.full((B,), k)
    mean = reference("sampling_step", "mean", xt=xt.numpy(), eps_hat=eps.numpy(), beta=beta, alpha_bar_prev=abp)
    scale = reference(
        "sampling_step", "mean", xt=xt.abs().numpy(), eps_hat=-eps.abs().numpy(), beta=beta, alpha_bar_prev=abp
    )
    _close(D.reverse_mean(s, xt, kk, eps), mean, scale)
    for variance in ("posterior", "beta"):
        out = D.p_sample_step(s, xt, kk, eps, z, variance)
        if k == 0:
            _close(out, mean, scale)  # no noise at the last sampling step (t = 1)
        else:
            sigma2 = D.reverse_variance(s, k, variance).item()
            step = reference(
                "sampling_step",
                "step",
                xt=xt.numpy(),
                eps_hat=eps.numpy(),
                z=z.numpy(),
                beta=beta,
                alpha_bar_prev=abp,
                sigma2=sigma2,
            )
            _close(out, step, scale + np.sqrt(sigma2) * z.abs().numpy())


@settings(max_examples=80, deadline=None)
@given(points())
def test_eps_weight_vs_e9(p):
    s, k, beta, abp, x0, xt, eps, z = p
    for variance in ("posterior", "beta"):
        w = D.eps_weight(s, variance)[k]
        sigma2 = D.reverse_variance(s, k, variance).item()
        _close(w, reference("eps_weight", "weight", beta=beta, alpha_bar_prev=abp, sigma2=sigma2))
    if k >= 1:  # σ² = β̃_t: the posterior and SNR forms (t ≥ 2 only; SNR(0) = ∞)
        w = D.eps_weight(s, "posterior")[k]
        _close(w, reference("eps_weight", "weight_posterior", beta=beta, alpha_bar_prev=abp))
        snr = s.snr.numpy()
        _close(w, reference("eps_weight", "weight_snr", snr_prev=snr[k - 1], snr=snr[k]))


@settings(max_examples=40, deadline=None)
@given(points())
def test_mean_matching_identity_kl_equals_weighted_eps(p):
    """‖μ̃_t − μ_θ‖²/(2σ²) = w_t ‖ε − ε̂‖² for t ≥ 2 (E8 + E9), with x_t built from ε."""
    s, k, beta, abp, x0, xt, eps, z = p
    if k == 0:
        return
    kk = torch.full((B,), k)
    xt = D.q_sample(s, x0, kk, eps)
    eps_hat = z
    mu_q, _ = D.q_posterior(s, x0, xt, kk)
    mu_p = D.reverse_mean(s, xt, kk, eps_hat)
    for variance in ("posterior", "beta"):
        sigma2 = D.reverse_variance(s, k, variance).item()
        lhs = reference("mean_matching", "kl_equal_var", mu_q=mu_q.numpy(), mu_p=mu_p.numpy(), sigma2=sigma2).sum(-1)
        rhs = D.eps_weight(s, variance)[k] * ((eps - eps_hat) ** 2).sum(-1)
        np.testing.assert_allclose(rhs.numpy(), lhs, rtol=1e-8)


def test_predict_x0_inverts_q_sample_and_reverse_mean_is_posterior_mean_at_true_eps():
    s = NoiseSchedule.linear(1000)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(6, 2, generator=g, dtype=torch.float64) * 2 - 1
    eps = torch.randn(6, 2, generator=g, dtype=torch.float64)
    k = torch.tensor([0, 1, 10, 500, 998, 999])
    xt = D.q_sample(s, x0, k, eps)
    torch.testing.assert_close(D.predict_x0(s, xt, k, eps), x0, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(D.reverse_mean(s, xt, k, eps), D.q_posterior(s, x0, xt, k)[0], rtol=1e-9, atol=1e-9)


def test_first_step_variances():
    s = NoiseSchedule.linear(100, scale_to_1000=True)
    assert s.posterior_variance[0].item() == 0.0
    # σ_1² for "posterior" is the clipped β̃_2 (decoder variance); "beta" gives β_1
    assert D.reverse_variance(s, 0, "posterior").item() == pytest.approx(s.posterior_variance[1].item(), rel=1e-12)
    assert D.reverse_variance(s, 0, "beta").item() == s.betas[0].item()
    torch.testing.assert_close(D.reverse_variance(s, torch.arange(1, 100)), s.posterior_variance[1:])


def test_learned_variance_interpolates():
    s = NoiseSchedule.cosine(50)
    k = torch.arange(50)
    x = torch.zeros(50, 2, dtype=torch.float64)
    v0 = D.reverse_variance_from_v(s, k, x)
    v1 = D.reverse_variance_from_v(s, k, x + 1)
    vh = D.reverse_variance_from_v(s, k, x + 0.5)
    torch.testing.assert_close(v0[:, 0], D.reverse_variance(s, k, "posterior"), rtol=1e-12, atol=0)
    torch.testing.assert_close(v1[:, 0], s.betas, rtol=1e-12, atol=0)
    torch.testing.assert_close(vh[:, 0], (v0[:, 0] * v1[:, 0]).sqrt(), rtol=1e-12, atol=0)  # geometric mean


def test_float32_inputs_give_float32_outputs():
    s = NoiseSchedule.linear(10)
    x = torch.zeros(3, 4)
    assert D.q_sample(s, x, torch.tensor([0, 1, 2]), torch.ones(3, 4)).dtype == torch.float32


@pytest.mark.parametrize(
    ("k", "message"),
    [
        (torch.tensor([0, 1, 10]), "out of range"),
        (torch.tensor([-1, 0, 1]), "out of range"),
        (torch.tensor([0.0, 1.0, 2.0]), "integer"),
        (torch.tensor([0, 1]), "shape mismatch"),
        (torch.zeros(3, 1, dtype=torch.long), "scalar or a"),
    ],
)
def test_bad_timesteps_raise(k, message):
    s = NoiseSchedule.linear(10)
    x = torch.zeros(3, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match=message):
        D.q_sample(s, x, k, x)


def test_bad_shapes_and_variance_names_raise():
    s = NoiseSchedule.linear(10)
    x = torch.zeros(3, 2, dtype=torch.float64)
    k = torch.zeros(3, dtype=torch.long)
    with pytest.raises(ValueError, match="shape mismatch"):
        D.q_sample(s, x, k, torch.zeros(3, 3))
    with pytest.raises(ValueError, match="shape mismatch"):
        D.reverse_mean(s, x, k, torch.zeros(2, 2))
    with pytest.raises(ValueError, match="variance"):
        D.reverse_variance(s, k, "small")

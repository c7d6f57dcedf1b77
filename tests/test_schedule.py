"""NoiseSchedule: published schedules reproduced exactly, derived quantities vs. SymPy, invalid input raises."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from elbo_lab.schedule import NoiseSchedule
from elbo_lab.symbolic import reference

betas_strategy = st.lists(st.floats(1e-5, 0.5), min_size=1, max_size=40)


# -- published schedules -------------------------------------------------------------------------------------


def test_linear_ddpm_endpoints_exact():
    s = NoiseSchedule.linear(1000)
    assert s.T == 1000 and s.betas.dtype == torch.float64
    assert s.betas[0].item() == 1e-4 and s.betas[-1].item() == 0.02  # DDPM (Ho et al. 2020), exactly
    np.testing.assert_array_equal(s.betas.numpy(), np.linspace(1e-4, 0.02, 1000))
    steps = np.diff(s.betas.numpy())
    np.testing.assert_allclose(steps, (0.02 - 1e-4) / 999, rtol=1e-9)


def test_linear_scale_to_1000_matches_improved_diffusion():
    s = NoiseSchedule.linear(100, scale_to_1000=True)
    # improved-diffusion get_named_beta_schedule("linear", 100): scale = 1000/100 = 10
    assert s.betas[0].item() == 10 * 1e-4 and s.betas[-1].item() == 10 * 0.02
    assert NoiseSchedule.linear(1000, scale_to_1000=True).betas.equal(NoiseSchedule.linear(1000).betas)


def _cosine_numpy(T: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """Independent numpy version of improved-diffusion's betas_for_alpha_bar with the cosine ᾱ(u)."""
    u = np.arange(T + 1, dtype=np.float64) / T
    f = np.cos((u + s) / (1 + s) * np.pi / 2) ** 2
    return np.minimum(1 - f[1:] / f[:-1], max_beta)


@pytest.mark.parametrize("T", [1, 10, 1000, 4000])
def test_cosine_matches_independent_numpy(T):
    s = NoiseSchedule.cosine(T)
    ref = _cosine_numpy(T)
    np.testing.assert_allclose(s.betas.numpy(), ref, rtol=1e-11, atol=0)
    assert s.betas[-1].item() == 0.999  # the last step is clipped at max_beta (ᾱ(1) ≈ 0)
    # telescoping: away from the clip, ᾱ_t = f(t/T)/f(0)
    u = np.arange(1, T + 1) / T
    f = np.cos((u + 0.008) / 1.008 * np.pi / 2) ** 2 / np.cos(0.008 / 1.008 * np.pi / 2) ** 2
    unclipped = np.cumsum(ref >= 0.999) == 0
    np.testing.assert_allclose(s.alpha_bars.numpy()[unclipped], f[unclipped], rtol=1e-9)


def test_cosine_max_beta_and_offset_change_the_schedule():
    base = NoiseSchedule.cosine(50)
    assert NoiseSchedule.cosine(50, max_beta=0.5).betas.max().item() == 0.5
    assert not torch.allclose(NoiseSchedule.cosine(50, s=0.1).betas, base.betas)


# -- derived quantities ----------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(betas_strategy)
def test_derived_quantities_vs_sympy(betas):
    s = NoiseSchedule.from_betas(betas)
    b = np.asarray(betas)
    np.testing.assert_array_equal(s.alphas.numpy(), 1 - b)
    np.testing.assert_allclose(s.alpha_bars.numpy(), np.cumprod(1 - b), rtol=1e-13)
    np.testing.assert_allclose(s.one_minus_alpha_bars.numpy(), 1 - np.cumprod(1 - b), rtol=1e-10)
    np.testing.assert_allclose(s.alpha_bars_prev.numpy(), np.concatenate([[1.0], np.cumprod(1 - b)[:-1]]), rtol=1e-13)
    # E9 snr(alpha_bar) and E6 variance(beta, alpha_bar_prev)
    np.testing.assert_allclose(
        s.snr.numpy(), reference("eps_weight", "snr", alpha_bar=s.alpha_bars.numpy()), rtol=1e-10
    )
    post = reference("posterior", "variance", beta=b, alpha_bar_prev=s.alpha_bars_prev.numpy())
    np.testing.assert_allclose(s.posterior_variance.numpy(), post, rtol=1e-10, atol=0)
    assert s.posterior_variance[0].item() == 0.0  # β̃_1 = 0
    assert bool((s.posterior_variance[1:] < s.betas[1:]).all())  # β̃_t < β_t for t ≥ 2
    # clipped log-variance: β̃_1 replaced by β̃_2 (improved-diffusion)
    if len(b) > 1:
        assert s.log_posterior_variance_clipped[0].item() == pytest.approx(np.log(post[1]), rel=1e-12)
        np.testing.assert_allclose(s.log_posterior_variance_clipped[1:].numpy(), np.log(post[1:]), rtol=1e-10)


def test_one_minus_alpha_bar_accurate_for_tiny_betas():
    s = NoiseSchedule.from_betas([1e-12, 1e-12])
    # exact: 1 - (1 - 1e-12)^2 = 2e-12 - 1e-24; naive 1 - cumprod loses ~4 digits here
    assert s.one_minus_alpha_bars[1].item() == pytest.approx(2e-12 - 1e-24, rel=1e-14)


def test_to_keeps_float64_and_values():
    s = NoiseSchedule.cosine(20).to("cpu")
    assert s.betas.dtype == torch.float64 and s.T == 20 and s.alpha_bars.dtype == torch.float64


# -- invalid input ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("betas", "message"),
    [
        ([], "empty"),
        ([0.1, float("nan")], "finite"),
        ([0.1, float("inf")], "finite"),
        ([0.1, 0.0], r"\(0, 1\)"),
        ([0.1, 1.0], r"\(0, 1\)"),
        ([-0.1], r"\(0, 1\)"),
        ([[0.1, 0.2]], "1-D"),
        ([1e-20, 0.1], "strictly decreasing"),
        ([0.9] * 400, "strictly decreasing"),  # ᾱ underflows to 0
        (["a"], "numbers"),
    ],
)
def test_invalid_betas_raise(betas, message):
    with pytest.raises(ValueError, match=message):
        NoiseSchedule.from_betas(betas)


def test_invalid_constructor_arguments_raise():
    with pytest.raises(ValueError, match="positive integer"):
        NoiseSchedule.linear(0)
    with pytest.raises(ValueError, match="positive integer"):
        NoiseSchedule.cosine(2.5)
    with pytest.raises(ValueError, match="max_beta"):
        NoiseSchedule.cosine(10, max_beta=1.0)
    with pytest.raises(ValueError, match="beta_start"):
        NoiseSchedule.linear(10, beta_start=0.0)
    with pytest.raises(ValueError, match="floating-point"):
        NoiseSchedule(torch.tensor([1, 2]))

"""E8-E12 (mean matching, ε weight, L_simple, sampling step, continuous time): checks, wrong claims, numerics.

Every derivation verifies; deliberately wrong claims are reported ✗ at the step that uses them; the lambdified
results agree with independent numerical computations (scipy quadrature, numpy formulas typed from the papers,
Monte Carlo with error bars) and numpy agrees with torch.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate

from elbo_lab.symbolic import build, get
from elbo_lab.symbolic import continuous_time as e12
from elbo_lab.symbolic import eps_weight as e9
from elbo_lab.symbolic import mean_matching as e8
from elbo_lab.symbolic import simple_loss as e10

NAMES = ["mean_matching", "eps_weight", "simple_loss", "sampling_step", "continuous_time"]


def _failed_steps(report) -> list[str]:
    return [s.step.statement for s in report.steps if not s.checked]


@pytest.mark.parametrize("name", NAMES)
def test_derivation_verifies(name):
    report = get(name).verify()
    assert report.ok, report.render_text()
    assert "✗" not in report.render_text()


@pytest.mark.parametrize(
    ("name", "claims", "failing"),
    [
        # mean matching without the factor 2
        ("mean_matching", {"quadratic": (e8.mu_q - e8.mu_p) ** 2 / e8.sigma2}, "Split off the mean dependence"),
        ("mean_matching", {"const": sp.log(e8.sigma2 / e8.var_q) / 2}, "C in closed form"),
        # the ε weight without its square
        ("eps_weight", {"weight": e9.beta / (2 * e9.sigma2 * e9.alpha * (1 - e9.alpha_bar))}, "Mean matching (E8)"),
        # the SNR form without the −1
        ("eps_weight", {"weight_snr": e9.snr_prev_s / (2 * e9.snr_s)}, "In SNR form"),
        # wrong sampling coefficients: β_t/(1−ᾱ_t) without the square root, and 1/α_t for 1/√α_t
        ("sampling_step", {"eps_coef": e9.beta / (1 - e9.alpha_bar)}, "The update's mean"),
        ("sampling_step", {"xt_coef": 1 / e9.alpha}, "The update's mean"),
        ("simple_loss", {"expected": (e10.m - e10.eps_hat) ** 2}, "Given x_t"),
        ("simple_loss", {"minimiser": e10.m / 2}, "the minimiser over ε̂"),
        ("continuous_time", {"term_x0": e12.HALF * (e12.snr_prev_s / e12.snr_s - 1) * e12.err2}, "x_0-form"),
        ("continuous_time", {"integrand": e12.HALF * e12.dsnr_dt * e12.err2}, "The integrand in t"),
    ],
)
def test_wrong_claim_is_reported(name, claims, failing):
    report = build(name, **claims).verify()
    assert not report.ok
    failed = _failed_steps(report)
    assert any(failing in s for s in failed), failed
    assert "✗" in report.render_text()


def test_exports_are_derived_textbook_forms():
    """The exported (derived) expressions equal the textbook forms, independently of the claims."""
    w = get("eps_weight")
    assert sp.cancel(w.result("weight").expr - e9.TEXTBOOK_WEIGHT) == 0
    assert sp.cancel(w.result("weight_snr").expr - e9.TEXTBOOK_WEIGHT_SNR) == 0
    mm = get("mean_matching")
    q, p, s2 = mm.result("kl_equal_var").args
    assert sp.simplify(mm.result("kl_equal_var").expr - (q - p) ** 2 / (2 * s2)) == 0
    ct = get("continuous_time")
    assert sp.expand(ct.result("term_x0_form").expr - e12.TEXTBOOK_TERM_X0) == 0
    assert sp.simplify(ct.result("gaussian_mmse").expr - 1 / (1 + e12.snr_s)) == 0


# ------------------------------------------------------------------------------------------------------------
# Numerical agreement
# ------------------------------------------------------------------------------------------------------------


@st.composite
def schedules(draw):
    """A random increasing-noise schedule: betas (T,) in (1e-5, 0.5), T in 3..20, float64."""
    n = draw(st.integers(3, 20))
    betas = draw(st.lists(st.floats(1e-5, 0.5), min_size=n, max_size=n))
    return np.asarray(betas, dtype=np.float64)


@settings(max_examples=25, deadline=None)
@given(schedules())
def test_eps_weights_vs_direct_numpy(betas):
    alphas = 1.0 - betas
    alpha_bars = np.cumprod(alphas)
    ab_prev = np.concatenate([[1.0], alpha_bars[:-1]])
    post_var = (1.0 - ab_prev) / (1.0 - alpha_bars) * betas  # β̃_t
    snr = alpha_bars / (1.0 - alpha_bars)
    t = slice(1, None)  # paper t = 2..T (code index 1..T-1)
    w = get("eps_weight")
    # β²/(2σ²α(1−ᾱ)) with σ² = β̃, typed from the DDPM paper, vs the lambdified weight
    direct = betas[t] ** 2 / (2 * post_var[t] * alphas[t] * (1 - alpha_bars[t]))
    np.testing.assert_allclose(w.numpy("weight")(betas[t], ab_prev[t], post_var[t]), direct, rtol=1e-10)
    np.testing.assert_allclose(w.numpy("weight_posterior")(betas[t], ab_prev[t]), direct, rtol=1e-10)
    # ½(SNR(t−1)/SNR(t) − 1) from numpy SNRs
    np.testing.assert_allclose(0.5 * (snr[:-1] / snr[1:] - 1), direct, rtol=1e-8)
    np.testing.assert_allclose(w.numpy("weight_snr")(snr[:-1], snr[1:]), direct, rtol=1e-8)
    np.testing.assert_allclose(w.numpy("snr")(alpha_bars), snr, rtol=1e-12)
    # with σ² = β the weight is β/(2α(1−ᾱ)), typed directly
    np.testing.assert_allclose(
        w.numpy("weight")(betas, ab_prev, betas), betas / (2 * alphas * (1 - alpha_bars)), rtol=1e-10
    )


def test_linear_schedule_weights_exact_vs_float():
    """E10's exact-rational weights for T = 10 agree with float64 numpy on the same linear schedule."""
    betas = np.linspace(1e-4, 0.02, 10)
    alpha_bars = np.cumprod(1 - betas)
    direct = betas[1:] / (2 * (1 - betas[1:]) * (1 - alpha_bars[:-1]))
    b_exact, ab_exact = e10.linear_schedule(10)
    w = get("eps_weight").result("weight_posterior")
    exact = [float(w.expr.subs(dict(zip(w.args, (b_exact[t], ab_exact[t]))))) for t in range(1, 10)]
    np.testing.assert_allclose(exact, direct, rtol=1e-12)
    assert max(exact) / min(exact) > 10  # far from uniform: L_simple re-weights the bound strongly


@settings(max_examples=25, deadline=None)
@given(
    st.floats(-3, 3),
    st.floats(0.05, 4),
    st.floats(-3, 3),
    st.floats(0.05, 4),
)
def test_mean_matching_kl_vs_quadrature(mu_q, var_q, mu_p, var_p):
    def log_n(x, m, v):
        return -0.5 * math.log(2 * math.pi * v) - (x - m) ** 2 / (2 * v)

    def integrand(x):
        return math.exp(log_n(x, mu_q, var_q)) * (log_n(x, mu_q, var_q) - log_n(x, mu_p, var_p))

    sd = math.sqrt(var_q)
    quad, _ = integrate.quad(integrand, mu_q - 40 * sd, mu_q + 40 * sd, epsabs=1e-12, epsrel=1e-12, limit=200)
    mm = get("mean_matching")
    kl = mm.numpy("kl")(mu_q, var_q, mu_p, var_p)
    assert kl == pytest.approx(quad, rel=1e-8, abs=1e-10)
    # KL = (mu_q − mu_p)²/(2σ²) + C, and C = 0 when the variances agree
    split = mm.numpy("kl_equal_var")(mu_q, mu_p, var_p) + mm.numpy("const")(var_q, var_p)
    assert split == pytest.approx(quad, rel=1e-8, abs=1e-10)
    assert mm.numpy("const")(var_p, var_p) == pytest.approx(0.0, abs=1e-14)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    st.floats(1e-3, 0.5),
    st.floats(0.01, 0.999),
    st.floats(-3, 3),
    st.floats(-3, 3),
    st.integers(0, 2**31 - 1),
)
def test_sampling_step_vs_monte_carlo(beta, alpha_bar_prev, xt, eps_hat, seed):
    """x_{t−1} = step(x_t, ε̂, z) with z ~ N(0, 1): sample mean and variance match N(μ_θ, σ²) within 4 stderr."""
    s = get("sampling_step")
    alpha_bar = (1 - beta) * alpha_bar_prev
    sigma2 = (1 - alpha_bar_prev) / (1 - alpha_bar) * beta  # β̃_t
    n = 20_000
    z = np.random.default_rng(seed).standard_normal(n)
    x = s.numpy("step")(xt, eps_hat, z, beta, alpha_bar_prev, sigma2)
    mean = s.numpy("mean")(xt, eps_hat, beta, alpha_bar_prev)
    # the mean, typed from the DDPM paper (Algorithm 2)
    assert mean == pytest.approx((xt - beta / math.sqrt(1 - alpha_bar) * eps_hat) / math.sqrt(1 - beta), rel=1e-12)
    se_mean = x.std(ddof=1) / math.sqrt(n)
    assert abs(x.mean() - mean) < 4 * se_mean
    dev2 = (x - x.mean()) ** 2
    se_var = dev2.std(ddof=1) / math.sqrt(n)
    assert abs(dev2.sum() / (n - 1) - sigma2) < 4 * se_var


@settings(max_examples=10, deadline=None, derandomize=True)
@given(st.floats(1e-3, 1e3), st.integers(0, 2**31 - 1))
def test_gaussian_mmse_vs_monte_carlo(snr, seed):
    """For x_0 ~ N(0, 1) the optimal denoiser E[x_0|x_t] = √ᾱ x_t has mean squared error 1/(1 + SNR)."""
    alpha_bar = snr / (1 + snr)
    rng = np.random.default_rng(seed)
    n = 20_000
    x0, eps = rng.standard_normal(n), rng.standard_normal(n)
    xt = math.sqrt(alpha_bar) * x0 + math.sqrt(1 - alpha_bar) * eps
    err2 = (x0 - math.sqrt(alpha_bar) * xt) ** 2
    mmse = get("continuous_time").numpy("gaussian_mmse")(snr)
    assert abs(err2.mean() - mmse) < 4 * err2.std(ddof=1) / math.sqrt(n)


@settings(max_examples=15, deadline=None)
@given(st.floats(-8, 8), st.floats(0.5, 16), st.floats(0.3, 3))
def test_continuous_bound_depends_only_on_endpoints(log_snr_max, width, power):
    """−½∫ SNR′(t) mmse(SNR(t)) dt by quadrature, for log SNR(t) = l_max − width·t^power, equals the end-point form."""
    ct = get("continuous_time")
    integrand, mmse = ct.numpy("continuous_integrand"), ct.numpy("gaussian_mmse")

    def snr(t):
        return math.exp(log_snr_max - width * t**power)

    def dsnr(t):
        return -width * power * t ** (power - 1) * snr(t) if t > 0 else (-width * snr(t) if power == 1 else 0.0)

    quad, _ = integrate.quad(lambda t: integrand(dsnr(t), mmse(snr(t))), 0, 1, epsabs=1e-12, epsrel=1e-10, limit=200)
    expected = ct.numpy("gaussian_loss")(snr(1.0), snr(0.0))
    assert quad == pytest.approx(expected, rel=1e-7)
    # and the discrete sum of x0-form terms approaches it from the same side as T grows (Riemann sum)
    term = ct.numpy("term_x0_form")
    errs = []
    for n in (100, 1000):
        ts = np.arange(1, n + 1) / n
        s_vals = np.exp(log_snr_max - width * ts**power)
        s_prev = np.exp(log_snr_max - width * (ts - 1 / n) ** power)
        errs.append(abs(np.sum(term(s_prev, s_vals, mmse(s_vals))) - expected))
    assert errs[1] < errs[0]


# ------------------------------------------------------------------------------------------------------------
# numpy and torch callables agree
# ------------------------------------------------------------------------------------------------------------

UNIT = {"beta", "alpha_bar_prev", "alpha_bar"}  # in (0, 1)


def _args(r, rng):
    out = []
    for name in r.arg_names:
        if name in UNIT:
            out.append(rng.uniform(0.05, 0.95, size=7))
        elif name in {"sigma2", "var_q", "var_p", "w", "v", "snr", "snr_min", "err2"}:
            out.append(rng.uniform(0.1, 3.0, size=7))
        elif name in {"snr_prev", "snr_max"}:
            out.append(rng.uniform(3.0, 9.0, size=7))
        else:
            out.append(rng.normal(size=7))
    return out


@pytest.mark.parametrize("name", NAMES)
def test_numpy_and_torch_callables_agree(name):
    rng = np.random.default_rng(0)
    d = get(name)
    for r in d.results.values():
        args = _args(r, rng)
        np_out = np.broadcast_to(np.asarray(r.numpy(*args), dtype=np.float64), (7,))
        t_out = r.torch(*[torch.from_numpy(a) for a in args])
        t_out = torch.as_tensor(t_out, dtype=torch.float64).expand(7).numpy()
        assert np.all(np.isfinite(np_out)), r.name
        np.testing.assert_allclose(t_out, np_out, rtol=1e-12, atol=1e-14, err_msg=f"{name}.{r.name}")

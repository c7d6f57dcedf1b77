"""E2-E4 (the VAE route): each derivation checks, wrong claims fail, and the lambdified results agree with
direct numerical integration (scipy.integrate.quad), with sampling (fixed seeds, 4 standard errors) and with
independent numeric references (scipy.stats), at random parameter values."""

import math

import numpy as np
import pytest
import sympy as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

from elbo_lab.symbolic import build, get
from elbo_lab.symbolic import linear_gaussian as e4
from elbo_lab.symbolic import reparameterization as e2
from elbo_lab.symbolic import vae_elbo as e3
from elbo_lab.symbolic.algebra import normal_pdf

NAMES = ["reparameterization", "vae_elbo", "linear_gaussian"]
# derandomize: the examples are a fixed function of the test (no stored failures in .hypothesis/, the same
# examples on every run and every machine), so a Monte Carlo check at 4 standard errors cannot flake.
HYP = settings(max_examples=25, deadline=None, derandomize=True, database=None)

locs = st.floats(-2.0, 2.0)
scales = st.floats(0.3, 2.0)
variances = st.floats(0.1, 2.0)
weights = st.floats(-2.0, 2.0)
xs = st.floats(-3.0, 3.0)


def quad(f, peak, lo=-40.0, hi=40.0):
    """∫ f over [lo, hi] (the integrands here are negligible outside), with a break point at the integrand's peak."""
    value, _ = integrate.quad(f, lo, hi, points=[peak], limit=200, epsabs=1e-12, epsrel=1e-10)
    return value


def log_quad_exp(log_f, peak):
    """log ∫ exp(log_f), scaled by exp(log_f(peak)) so that the integral is O(1) for quad's absolute tolerance."""
    c = log_f(peak)
    return c + math.log(quad(lambda z: math.exp(log_f(z) - c), peak))


def lognorm(x, mean, var):
    """log N(x; mean, var) in plain floats: a fast, independent reference for quad (checked against scipy below)."""
    return -0.5 * (math.log(2 * math.pi * var) + (x - mean) ** 2 / var)


def test_reference_lognorm_is_scipys():
    assert lognorm(0.3, -1.2, 0.7) == pytest.approx(stats.norm.logpdf(0.3, -1.2, math.sqrt(0.7)), rel=1e-14)


def fn(name, result):
    return get(name).numpy(result)


def mc_agrees(samples, exact):
    """|sample mean − exact| < 4 standard errors.  When q(z|x) is the exact posterior (e.g. w = 0, m = 0, v = 1)
    every log-weight equals the ELBO: the spread is zero and only float rounding (~1e-16 relative) is left, so the
    error bar gets a rounding floor of 1e-12 relative."""
    stderr = samples.std(ddof=1) / math.sqrt(samples.size)
    return abs(samples.mean() - exact) < 4 * stderr + 1e-12 * (1.0 + abs(exact))


# ---------------------------------------------------------------------------------------------------------
# every step checks; wrong claims fail
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_derivation_checks(name):
    report = get(name).verify()
    failed = [s.step.statement for s in report.steps if not s.checked]
    assert report.ok and not failed, failed
    assert "✗" not in report.render_text()
    assert len(report.steps) >= 9


WRONG = [
    # (derivation, claims, words in the statement of a step that must fail)
    ("reparameterization", {"density": normal_pdf(e2.z, e2.mu, e2.sigma)}, "Change of variables"),
    ("reparameterization", {"variance": e2.sigma}, "Var[mu + sigma·eps]"),
    ("reparameterization", {"grad_sigma": sp.Integer(1)}, "∂z/∂sigma"),
    ("reparameterization", {"pathwise_sigma": e2.sigma}, "Pathwise gradient"),
    ("vae_elbo", {"elbo": e3.RECON + e3.KL_PRIOR}, "ELBO = E_q[log p(x|z)] − KL"),  # the KL's sign flipped
    ("vae_elbo", {"log_marginal": e3.ELBO - e3.GAP}, "log p(x) = ELBO + KL"),
    ("vae_elbo", {"marginal_variance": e3.w**2}, "marginal of x"),
    ("linear_gaussian", {"posterior_variance": e4.sigma2 / e4.w**2}, "(D = 1) The posterior"),  # without the +1
    ("linear_gaussian", {"marginal_cov_2d": e4.W2 * e4.W2.T + sp.eye(2)}, "(D = 2) log p(x)"),
]


@pytest.mark.parametrize(("name", "claims", "where"), WRONG, ids=[f"{n}-{next(iter(c))}" for n, c, _ in WRONG])
def test_wrong_claim_is_caught(name, claims, where):
    report = build(name, **claims).verify()
    assert not report.ok
    assert "✗" in report.render_text()
    failed = [s.step.statement for s in report.steps if not s.checked]
    assert any(where in s for s in failed), failed


def test_exports_are_derived_not_claimed():
    """A wrong claim makes a step fail, but the exported result is still the one SymPy derived."""
    wrong = build("linear_gaussian", posterior_variance=e4.sigma2 / e4.w**2)
    exported = wrong.numpy("posterior_variance")(1.5, 0.7)
    assert exported == pytest.approx(get("linear_gaussian").numpy("posterior_variance")(1.5, 0.7), rel=1e-14)
    assert exported != pytest.approx(0.7 / 1.5**2)
    grad = build("reparameterization", grad_sigma=sp.Integer(1)).numpy("grad_sigma")
    assert grad(0.3, 2.0, -1.25) == -1.25


# ---------------------------------------------------------------------------------------------------------
# E2 reparameterization
# ---------------------------------------------------------------------------------------------------------


def test_reparameterization_exports():
    r = get("reparameterization")
    assert r.result("sample").arg_names == ("mu", "sigma", "eps")
    assert r.result("grad_mu").arg_names == ("mu", "sigma", "eps")
    assert r.result("grad_sigma").arg_names == ("mu", "sigma", "eps")


@HYP
@given(mu=locs, sigma=scales, z=st.floats(-5.0, 5.0))
def test_reparameterized_density_is_the_normal(mu, sigma, z):
    density = fn("reparameterization", "density")
    assert density(z, mu, sigma) == pytest.approx(stats.norm.pdf(z, mu, sigma), rel=1e-12)
    assert quad(lambda t: density(t, mu, sigma), mu) == pytest.approx(1.0, abs=1e-9)


# One fixed standard-normal draw for the pathwise test.  z = μ + σ ε is location-scale in ε, so the z-scores of
# E[z] and Var[z] (and of the gradient estimates, linear combinations of mean(ε) and mean(ε²) − 1, which are
# uncorrelated) are bounded by those of the draw itself whatever (μ, σ): a draw checked once below to lie within
# 1.5 standard errors keeps every example within 4 -- deterministic, not widened.  (A hypothesis-drawn seed made
# this test flaky: seed 3683 puts the mean 4.15σ off.)
PATHWISE_EPS = np.random.default_rng(0).standard_normal(20_000)


def test_pathwise_draw_is_typical():
    e, n = PATHWISE_EPS, PATHWISE_EPS.size
    z_mean = e.mean() / (e.std(ddof=1) / math.sqrt(n))
    z_var = (e**2 - 1).mean() / ((e**2 - 1).std(ddof=1) / math.sqrt(n))
    assert math.hypot(z_mean, z_var) < 1.5


@HYP
@given(mu=locs, sigma=scales)
def test_reparameterized_samples_and_pathwise_gradients(mu, sigma):
    r = get("reparameterization")
    eps = PATHWISE_EPS
    z = r.numpy("sample")(mu, sigma, eps)
    n = eps.size

    def within(samples, exact):
        return abs(samples.mean() - exact) < 4 * samples.std(ddof=1) / math.sqrt(n)

    assert within(z, mu)  # E[z] = mu
    assert within((z - mu) ** 2, sigma**2)  # Var[z] = sigma²
    # pathwise gradients of E[z²] = mu² + sigma²: per-sample 2 z ∂z/∂θ, averaged
    g_mu = 2 * z * np.broadcast_to(r.numpy("grad_mu")(mu, sigma, eps), eps.shape)
    g_sigma = 2 * z * r.numpy("grad_sigma")(mu, sigma, eps)
    assert within(g_mu, r.numpy("pathwise_grad_mu")(mu, sigma))
    assert within(g_sigma, r.numpy("pathwise_grad_sigma")(mu, sigma))


@HYP
@given(mu=locs, sigma=scales, eps=st.floats(-3.0, 3.0))
def test_gradients_match_finite_differences_and_autograd(mu, sigma, eps):
    r = get("reparameterization")
    sample = r.numpy("sample")
    h = 1e-6
    fd_mu = (sample(mu + h, sigma, eps) - sample(mu - h, sigma, eps)) / (2 * h)
    fd_sigma = (sample(mu, sigma + h, eps) - sample(mu, sigma - h, eps)) / (2 * h)
    assert fd_mu == pytest.approx(r.numpy("grad_mu")(mu, sigma, eps), abs=1e-8)
    assert fd_sigma == pytest.approx(r.numpy("grad_sigma")(mu, sigma, eps), abs=1e-8)
    # torch autograd through the lambdified torch sample
    m = torch.tensor(mu, dtype=torch.float64, requires_grad=True)
    s = torch.tensor(sigma, dtype=torch.float64, requires_grad=True)
    r.torch("sample")(m, s, torch.tensor(eps, dtype=torch.float64)).backward()
    assert m.grad.item() == pytest.approx(1.0)
    assert s.grad.item() == pytest.approx(eps, abs=1e-15)


# ---------------------------------------------------------------------------------------------------------
# E3 the ELBO identities on the conjugate model
# ---------------------------------------------------------------------------------------------------------


def log_joint(z, x, w, b, s2):
    """log p(x|z) + log p(z), with the reference log-density (independent of the SymPy expressions)."""
    return lognorm(x, w * z + b, s2) + lognorm(z, 0.0, 1.0)


@HYP
@given(x=xs, w=weights, b=st.floats(-1.0, 1.0), s2=variances, m=locs, v=variances)
def test_vae_elbo_against_quadrature(x, w, b, s2, m, v):
    d = get("vae_elbo")
    log_px = d.numpy("log_marginal")(x, w, b, s2)
    elbo = d.numpy("elbo")(x, w, b, s2, m, v)
    gap = d.numpy("gap")(x, w, b, s2, m, v)
    pm, pv = d.numpy("posterior_mean")(x, w, b, s2), d.numpy("posterior_variance")(w, s2)
    # pm only places quad's break point at the peak; the integrals themselves use the reference densities
    assert log_px == pytest.approx(log_quad_exp(lambda z: log_joint(z, x, w, b, s2), pm), abs=1e-8)

    def elbo_integrand(z):
        return math.exp(lognorm(z, m, v)) * (log_joint(z, x, w, b, s2) - lognorm(z, m, v))

    assert elbo == pytest.approx(quad(elbo_integrand, m, m - 20 * math.sqrt(v), m + 20 * math.sqrt(v)), abs=1e-8)
    assert gap >= -1e-12 and elbo <= log_px + 1e-12  # an ELBO
    assert log_px - elbo == pytest.approx(gap, abs=1e-9)
    # the reconstruction / prior-KL split
    recon = d.numpy("reconstruction")(x, w, b, s2, m, v)
    assert recon - d.numpy("kl_prior")(m, v) == pytest.approx(elbo, abs=1e-10)
    # the exact posterior: the ELBO is log p(x) there, and its moments are those of p(x, z)/p(x)
    assert d.numpy("elbo")(x, w, b, s2, pm, pv) == pytest.approx(log_px, abs=1e-10)

    def post(z, k):
        return z**k * math.exp(log_joint(z, x, w, b, s2) - log_px)

    assert quad(lambda z: post(z, 1), pm) == pytest.approx(pm, abs=1e-8)
    assert quad(lambda z: post(z, 2), pm) - pm**2 == pytest.approx(pv, abs=1e-8)


@HYP
@given(x=xs, w=weights, b=st.floats(-1.0, 1.0), s2=variances, m=locs, v=variances, seed=st.integers(0, 2**32 - 1))
def test_vae_elbo_monte_carlo(x, w, b, s2, m, v, seed):
    d = get("vae_elbo")
    z = m + math.sqrt(v) * np.random.default_rng(seed).standard_normal(20_000)
    samples = log_joint(z, x, w, b, s2) - lognorm(z, m, v)  # log p(x, z) − log q(z|x)
    assert mc_agrees(samples, d.numpy("elbo")(x, w, b, s2, m, v))


# ---------------------------------------------------------------------------------------------------------
# E4 the linear-Gaussian model
# ---------------------------------------------------------------------------------------------------------


def test_linear_gaussian_export_signatures():
    d = get("linear_gaussian")
    assert d.result("log_marginal").arg_names == ("x", "w", "b", "sigma2")
    assert d.result("posterior_mean").arg_names == ("x", "w", "b", "sigma2")
    assert d.result("posterior_variance").arg_names == ("w", "sigma2")
    assert d.result("elbo").arg_names == ("x", "w", "b", "sigma2", "m", "v")
    assert d.result("gap").arg_names == ("x", "w", "b", "sigma2", "m", "v")


@HYP
@given(x=xs, w=weights, b=st.floats(-1.0, 1.0), s2=variances, m=locs, v=variances)
def test_linear_gaussian_scalar_against_quadrature_and_e3(x, w, b, s2, m, v):
    d = get("linear_gaussian")
    log_px = d.numpy("log_marginal")(x, w, b, s2)
    pm, pv = d.numpy("posterior_mean")(x, w, b, s2), d.numpy("posterior_variance")(w, s2)
    assert log_px == pytest.approx(log_quad_exp(lambda z: log_joint(z, x, w, b, s2), pm), abs=1e-8)
    assert quad(lambda z: z * math.exp(log_joint(z, x, w, b, s2) - log_px), pm) == pytest.approx(pm, abs=1e-8)
    elbo, gap = d.numpy("elbo")(x, w, b, s2, m, v), d.numpy("gap")(x, w, b, s2, m, v)
    assert log_px - elbo == pytest.approx(gap, abs=1e-9) and gap >= -1e-12
    assert d.numpy("gap")(x, w, b, s2, pm, pv) == pytest.approx(0.0, abs=1e-12)
    # E3 and E4 derive the same scalar model independently
    e3d = get("vae_elbo")
    assert e3d.numpy("log_marginal")(x, w, b, s2) == pytest.approx(log_px, abs=1e-12)
    assert e3d.numpy("elbo")(x, w, b, s2, m, v) == pytest.approx(elbo, abs=1e-10)


@HYP
@given(
    x=st.tuples(xs, xs),
    w=st.tuples(weights, weights),
    b=st.tuples(st.floats(-1.0, 1.0), st.floats(-1.0, 1.0)),
    s2=variances,
    m=locs,
    v=variances,
    seed=st.integers(0, 2**32 - 1),
)
def test_linear_gaussian_2d(x, w, b, s2, m, v, seed):
    d = get("linear_gaussian")
    args = (*x, *w, *b, s2)
    xv, wv, bv = np.array(x), np.array(w), np.array(b)
    cov = np.outer(wv, wv) + s2 * np.eye(2)
    log_px = d.numpy("log_marginal_2d")(*args)
    assert log_px == pytest.approx(stats.multivariate_normal(bv, cov).logpdf(xv), abs=1e-10)

    def log_joint_2d(z):
        return lognorm(x[0], w[0] * z + b[0], s2) + lognorm(x[1], w[1] * z + b[1], s2) + lognorm(z, 0.0, 1.0)

    pm, pv = d.numpy("posterior_mean_2d")(*args), d.numpy("posterior_variance_2d")(*w, s2)
    assert log_px == pytest.approx(log_quad_exp(log_joint_2d, pm), abs=1e-8)
    assert quad(lambda z: z * math.exp(log_joint_2d(z) - log_px), pm) == pytest.approx(pm, abs=1e-8)
    assert quad(lambda z: (z - pm) ** 2 * math.exp(log_joint_2d(z) - log_px), pm) == pytest.approx(pv, abs=1e-8)
    # ELBO by Monte Carlo under q = N(m, v); gap = log p − ELBO
    z = m + math.sqrt(v) * np.random.default_rng(seed).standard_normal(20_000)
    samples = log_joint_2d(z) - lognorm(z, m, v)
    elbo = d.numpy("elbo_2d")(*args, m, v)
    assert mc_agrees(samples, elbo)
    assert log_px - elbo == pytest.approx(d.numpy("gap_2d")(*args, m, v), abs=1e-9)


# ---------------------------------------------------------------------------------------------------------
# numpy and torch callables agree
# ---------------------------------------------------------------------------------------------------------

RANGES = {"sigma": (0.3, 2.0), "s2": (0.1, 2.0), "sigma2": (0.1, 2.0), "v": (0.1, 2.0)}


@pytest.mark.parametrize("name", NAMES)
def test_numpy_and_torch_agree(name):
    rng = np.random.default_rng(0)
    d = get(name)
    for result in d.results.values():
        values = [rng.uniform(*RANGES.get(a, (-2.0, 2.0)), size=7) for a in result.arg_names]
        expected = np.broadcast_to(result.numpy(*values), (7,))
        got = result.torch(*[torch.tensor(a, dtype=torch.float64) for a in values])
        got = np.broadcast_to(torch.as_tensor(got, dtype=torch.float64).numpy(), (7,))
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12, err_msg=f"{name}.{result.name}")
        assert np.all(np.isfinite(expected))

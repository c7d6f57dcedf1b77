"""E5 forward marginal, E6 posterior, E7 telescoping ELBO: the derivations check, wrong claims fail, and the
lambdified results agree with sampling (numpy), with numerical integration (scipy.integrate.quad) and with
their torch twins."""

import numpy as np
import pytest
import sympy as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, optimize

from elbo_lab.symbolic import build, get
from elbo_lab.symbolic import forward_marginal as fm_mod
from elbo_lab.symbolic import posterior as po_mod

FAST = settings(max_examples=25, deadline=None, derandomize=True)


def failed_steps(report):
    return [s.step.statement for s in report.steps if not s.checked]


@pytest.mark.parametrize("name", ["forward_marginal", "posterior", "telescoping"])
def test_derivation_checks(name):
    report = get(name).verify()
    assert report.ok, report.render_text()
    assert "✗" not in report.render_text()


# ---------------------------------------------------------------------------------------------------------
# Wrong claims are caught, at the step that makes them
# ---------------------------------------------------------------------------------------------------------


def test_forward_marginal_wrong_variance_fails():
    report = build("forward_marginal", variance=1 - fm_mod.alpha_bar**2).verify()
    assert not report.ok and "✗" in report.render_text()
    assert any(s.startswith("Inductive step") for s in failed_steps(report))
    assert any(s.startswith("Base case") for s in failed_steps(report))


def test_posterior_variance_with_alpha_bar_t_in_place_of_alpha_bar_prev_fails():
    beta, abp = po_mod.beta, po_mod.alpha_bar_prev
    ab_t = (1 - beta) * abp
    report = build("posterior", variance=(1 - ab_t) / (1 - ab_t) * beta).verify()
    assert not report.ok and "✗" in report.render_text()
    assert failed_steps(report) == ["β̃_t = (1 - ᾱ_{t-1}) β_t / (1 - ᾱ_t)"]


def test_posterior_mean_with_wrong_coefficient_fails():
    beta, abp, x0, xt = po_mod.beta, po_mod.alpha_bar_prev, po_mod.x0, po_mod.xt
    ab_t = (1 - beta) * abp
    # √α_t dropped from the x_t coefficient
    wrong = sp.sqrt(abp) * beta / (1 - ab_t) * x0 + (1 - abp) / (1 - ab_t) * xt
    report = build("posterior", mean=wrong).verify()
    assert [s.startswith("μ̃_t = ") for s in failed_steps(report)] == [True]


def test_posterior_eps_form_with_wrong_coefficient_fails():
    beta, abp, xt, eps = po_mod.beta, po_mod.alpha_bar_prev, po_mod.xt, po_mod.eps
    ab_t = (1 - beta) * abp
    wrong = (xt - beta / (1 - ab_t) * eps) / sp.sqrt(1 - beta)  # 1 - ᾱ_t without its square root
    report = build("posterior", mean_eps=wrong).verify()
    assert [s.startswith("Substituting x_0") for s in failed_steps(report)] == [True]


def test_telescoping_sign_flip_fails():
    report = build("telescoping", sign=-1).verify()
    failed = failed_steps(report)
    assert not report.ok and "✗" in report.render_text()
    assert any(s.startswith("T = 3: regroup") for s in failed) and any(s.startswith("T = 4: regroup") for s in failed)
    assert any(s.startswith("Hence the ELBO") for s in failed)


def test_telescoping_one_percent_variance_error_fails():
    report = build("telescoping", variance_factor={(3, 2): sp.Rational(101, 100)}).verify()
    assert [s.startswith("T = 3: regroup") for s in failed_steps(report)] == [True]


def test_exported_results_are_derived_not_claimed():
    """A wrong claim fails its step but does not leak into the exports (they are read off SymPy's algebra)."""
    beta, abp = po_mod.beta, po_mod.alpha_bar_prev
    wrong = build("posterior", variance=beta)
    textbook = (1 - abp) / (1 - (1 - beta) * abp) * beta
    assert sp.cancel(wrong.result("variance").expr - textbook) == 0


# ---------------------------------------------------------------------------------------------------------
# E5 against a sampled chain (numpy)
# ---------------------------------------------------------------------------------------------------------


@FAST
@given(
    betas=st.lists(st.floats(1e-3, 0.5), min_size=1, max_size=8),
    x0=st.floats(-3.0, 3.0),
)
def test_forward_marginal_matches_sampled_chain(betas, x0):
    d = get("forward_marginal")
    mean, variance = d.numpy("mean"), d.numpy("variance")
    step_mean, step_var = d.numpy("step_mean"), d.numpy("step_variance")
    rng = np.random.default_rng(0)
    n = 20_000
    x = np.full(n, x0)
    for b in betas:  # one forward step at a time: q(x_t|x_{t-1}) = N(√(1-β) x_{t-1}, β)
        x = step_mean(x, b) + np.sqrt(step_var(b)) * rng.standard_normal(n)
    alpha_bar = float(np.prod(1 - np.array(betas)))
    m, v = mean(x0, alpha_bar), variance(alpha_bar)
    assert abs(x.mean() - m) < 4 * np.sqrt(v / n)
    assert abs(x.var(ddof=1) - v) < 4 * v * np.sqrt(2 / (n - 1))
    # the reparameterized draw and its inverse
    eps = rng.standard_normal(5)
    xt = d.numpy("sample")(x0, eps, alpha_bar)
    np.testing.assert_allclose(d.numpy("eps_from_xt")(xt, x0, alpha_bar), eps, rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------------------------------------------------
# E6 against the numerically integrated Bayes posterior (scipy.integrate.quad)
# ---------------------------------------------------------------------------------------------------------


def _log_normal(x, mu, var):
    return -0.5 * np.log(2 * np.pi * var) - (x - mu) ** 2 / (2 * var)


@FAST
@given(
    beta=st.floats(1e-3, 0.5),
    alpha_bar_prev=st.floats(0.05, 0.999),
    x0=st.floats(-2.0, 2.0),
    xt=st.floats(-3.0, 3.0),
)
def test_posterior_matches_numerical_bayes(beta, alpha_bar_prev, x0, xt):
    po, fm = get("posterior"), get("forward_marginal")
    alpha = 1 - beta

    def log_joint(xp):  # log q(x_t|x_{t-1}) + log q(x_{t-1}|x_0), written here independently of the derivations
        return _log_normal(xt, np.sqrt(alpha) * xp, beta) + _log_normal(
            xp, np.sqrt(alpha_bar_prev) * x0, 1 - alpha_bar_prev
        )

    mode = optimize.minimize_scalar(lambda z: -log_joint(z), bracket=(-5.0, 5.0)).x
    width = np.sqrt(beta) + np.sqrt(1 - alpha_bar_prev)  # larger than the posterior's standard deviation
    lo, hi = mode - 40 * width, mode + 40 * width
    top = log_joint(mode)

    def moment(k):  # ∫ (z - mode)^k exp(log_joint(z) - top) dz
        f = lambda z: (z - mode) ** k * np.exp(log_joint(z) - top)  # noqa: E731
        return integrate.quad(f, lo, hi, points=[mode], epsabs=1e-13, epsrel=1e-10, limit=200)[0]

    z0, z1, z2 = moment(0), moment(1), moment(2)
    num_mean = mode + z1 / z0
    num_var = z2 / z0 - (z1 / z0) ** 2
    np.testing.assert_allclose(po.numpy("mean")(x0, xt, beta, alpha_bar_prev), num_mean, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(po.numpy("variance")(beta, alpha_bar_prev), num_var, rtol=1e-6)
    np.testing.assert_allclose(
        po.numpy("coef_x0")(beta, alpha_bar_prev) * x0 + po.numpy("coef_xt")(beta, alpha_bar_prev) * xt,
        num_mean,
        rtol=1e-7,
        atol=1e-9,
    )
    # the normaliser ∫ q(x_t|x_{t-1}) q(x_{t-1}|x_0) dx_{t-1} is E5's marginal q(x_t|x_0)
    alpha_bar = alpha * alpha_bar_prev
    log_marg = _log_normal(xt, fm.numpy("mean")(x0, alpha_bar), fm.numpy("variance")(alpha_bar))
    np.testing.assert_allclose(np.log(z0) + top, log_marg, rtol=1e-8, atol=1e-8)
    # ε form: with the ε that maps x_0 to x_t, μ̃ and x_0 are recovered
    eps = fm.numpy("eps_from_xt")(xt, x0, alpha_bar)
    np.testing.assert_allclose(po.numpy("mean_eps")(xt, eps, beta, alpha_bar_prev), num_mean, rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(po.numpy("x0_from_eps")(xt, eps, beta, alpha_bar_prev), x0, rtol=1e-8, atol=1e-8)


# ---------------------------------------------------------------------------------------------------------
# E7: the decomposition numerically, and the ELBO against sampling the T = 3 chain
# ---------------------------------------------------------------------------------------------------------


def _chain_params(rng):
    betas = rng.uniform(0.05, 0.6, 3)
    m, c, s = rng.uniform(0.5, 1.2, 3), rng.normal(0, 0.3, 3), rng.uniform(0.1, 0.8, 3)
    return betas, m, c, s


def test_telescoping_terms_add_up_and_elbo_matches_sampling():
    d = get("telescoping")
    rng = np.random.default_rng(1)
    betas, m, c, s = _chain_params(rng)
    x0 = 0.7
    n = 40_000
    xs = [np.full(n, x0)]
    for b in betas:  # forward chain, one step at a time
        xs.append(np.sqrt(1 - b) * xs[-1] + np.sqrt(b) * rng.standard_normal(n))
    args = (*xs, *betas, *m, *c, *s)
    log_ratio = d.numpy("log_ratio_T3")(*args)
    parts = d.numpy("recon_T3")(*args) - d.numpy("prior_T3")(*args)
    parts = parts - d.numpy("denoise_T3_2")(*args) - d.numpy("denoise_T3_3")(*args)
    np.testing.assert_allclose(parts, log_ratio, rtol=1e-10, atol=1e-9)  # the identity, pointwise
    elbo = d.numpy("elbo_T3")(x0, *betas, *m, *c, *s)
    assert abs(log_ratio.mean() - elbo) < 4 * log_ratio.std(ddof=1) / np.sqrt(n)
    # the same ELBO from the generic per-term KLs
    ab = np.cumprod(1 - betas)
    l_t = [d.numpy("kl_term")(xs[t], x0, betas[t - 1], ab[t - 2], m[t - 1], c[t - 1], s[t - 1]) for t in (2, 3)]
    recon = d.numpy("recon_T3")(*args)
    rao = recon - d.numpy("prior_kl")(x0, ab[2]) - l_t[0] - l_t[1]
    assert abs(rao.mean() - elbo) < 4 * rao.std(ddof=1) / np.sqrt(n)


# ---------------------------------------------------------------------------------------------------------
# numpy and torch callables agree
# ---------------------------------------------------------------------------------------------------------


@FAST
@given(seed=st.integers(0, 2**31 - 1))
def test_numpy_and_torch_callables_agree(seed):
    rng = np.random.default_rng(seed)
    values = {
        "x0": rng.normal(),
        "xt": rng.normal(),
        "x_prev": rng.normal(),
        "eps": rng.normal(),
        "beta": rng.uniform(1e-4, 0.5),
        "alpha_bar": rng.uniform(0.01, 0.999),
        "alpha_bar_prev": rng.uniform(0.01, 0.999),
        "m": rng.uniform(0.5, 1.5),
        "c": rng.normal(),
        "s": rng.uniform(0.05, 1.0),
    }
    betas, m, c, s = _chain_params(rng)
    for i in range(3):
        values |= {f"x{i + 1}": rng.normal(), f"beta_{i + 1}": betas[i], f"m_{i + 1}": m[i]}
        values |= {f"c_{i + 1}": c[i], f"s_{i + 1}": s[i]}
    for name in ["forward_marginal", "posterior", "telescoping"]:
        for rname, r in get(name).results.items():
            args = [values[a] for a in r.arg_names]
            expected = r.numpy(*args)
            got = r.torch(*[torch.tensor(a, dtype=torch.float64) for a in args])
            np.testing.assert_allclose(float(got), expected, rtol=1e-10, atol=1e-12, err_msg=f"{name}.{rname}")

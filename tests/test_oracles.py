"""Oracles: Gaussian data with the MMSE ε-predictor (closed-form bound, exact model marginal) and a Gaussian mixture.

Routes compared (each can fail independently):
- the MMSE predictor vs. a least-squares regression of ε on x_t (OLS standard errors are exact here: the residual
  ε − E[ε|x_t] is Gaussian and independent of x_t) and vs. perturbed predictors (orthogonality principle);
- the closed-form bound terms vs. E9's ε-weight times the minimum ε-MSE (engine ``eps_weight`` + SymPy E8 const);
- the closed-form expected bound, pointwise bound and model marginal vs. dense joint Gaussians of q(x_{0:T}) and
  p_θ(x_{0:T}) built directly from β_t and the engine's reverse mean (KL of (T+1)D-dimensional Gaussians);
- bound ≥ −log p_θ(x_0) at every x_0, E_data bound ≥ E_data[−log p_θ] ≥ H, gap vs T (printed, ``-s``);
- the engine's ``variational_bound(estimator="full", decoder="gaussian")`` vs. the closed forms, within 4 stderr;
- the mixture predictor vs. self-normalised importance sampling of E[ε|x_t]; its density vs. a grid and scipy.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from elbo_lab.bound import variational_bound
from elbo_lab.diffusion import eps_weight as engine_eps_weight
from elbo_lab.diffusion import q_sample, reverse_mean, reverse_variance
from elbo_lab.oracles import GaussianData, GaussianMixture, GaussianMixture2D, format_gap_table, gap_vs_T
from elbo_lab.schedule import NoiseSchedule
from elbo_lab.symbolic import get

F64 = torch.float64
VARIANCES = ("posterior", "beta")


def make_gaussian(D: int = 2, seed: int = 0) -> GaussianData:
    """A non-diagonal Gaussian with eigenvalues in [0.05, 0.5] and a mean inside [−0.5, 0.5]^D."""
    data = GaussianData.random(D, seed=seed, eig_range=(0.05, 0.5))
    assert torch.allclose(data.eigvals, torch.linspace(0.05, 0.5, D, dtype=F64), rtol=1e-12)
    return data


def make_mixture() -> GaussianMixture2D:
    return GaussianMixture2D(
        weights=torch.tensor([0.5, 0.3, 0.2]),
        means=torch.tensor([[-0.5, -0.3], [0.5, 0.4], [0.1, 0.6]]),
        covs=torch.tensor([[[0.05, 0.02], [0.02, 0.04]], [[0.03, -0.01], [-0.01, 0.06]], [[0.02, 0.0], [0.0, 0.01]]]),
    )


def affine_coefficients(f, D: int, k: int):
    """(W (D, D), b (D,)) of an affine map f(x, k) = W x + b, read off at 0 and the basis vectors."""
    X = torch.cat([torch.zeros(1, D, dtype=F64), torch.eye(D, dtype=F64)])  # (D+1, D)
    Y = f(X, torch.full((D + 1,), k))
    b = Y[0]
    return (Y[1:] - b).T, b


# --------------------------------------------------------------------------------------------------------------
# The MMSE ε-predictor
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [2, 40, 90])
def test_optimal_eps_equals_least_squares_regression(k):
    data, sch = make_gaussian(D=3), NoiseSchedule.cosine(100)
    D, N = data.dim, 20000
    gen = torch.Generator().manual_seed(k)
    x0 = data.sample(N, gen)
    eps = torch.randn(N, D, dtype=F64, generator=gen)
    xt = q_sample(sch, x0, torch.full((N,), k), eps)
    X = torch.cat([xt, torch.ones(N, 1, dtype=F64)], dim=1)  # (N, D+1)
    XtX_inv = torch.linalg.inv(X.T @ X)
    coef = XtX_inv @ X.T @ eps  # (D+1, D): ε_j ≈ Σ_i coef[i, j] x_i + coef[D, j]
    resid_var = ((eps - X @ coef) ** 2).sum(0) / (N - D - 1)  # (D,)
    se = (torch.diag(XtX_inv).unsqueeze(1) * resid_var).sqrt()  # (D+1, D)
    W, b = affine_coefficients(data.optimal_eps(sch), D, k)
    exact = torch.cat([W.T, b.unsqueeze(0)])  # same layout as coef
    z = (coef - exact).abs() / se
    assert z.max() < 4, f"regression coefficients differ from the MMSE predictor by {z.max():.1f} stderr"


def test_optimal_eps_minimises_mse_and_matches_closed_form():
    data, sch = make_gaussian(D=2), NoiseSchedule.linear(200)
    D, N, k = data.dim, 20000, 60
    gen = torch.Generator().manual_seed(1)
    x0 = data.sample(N, gen)
    eps = torch.randn(N, D, dtype=F64, generator=gen)
    kk = torch.full((N,), k)
    xt = q_sample(sch, x0, kk, eps)
    f_opt = data.optimal_eps(sch)
    e_opt = f_opt(xt, kk)
    err_opt = ((eps - e_opt) ** 2).sum(-1)
    # the minimum ε-MSE in closed form (tr(I − (1−ᾱ) C⁻¹)) vs. Monte Carlo
    se = err_opt.std() / math.sqrt(N)
    assert abs(err_opt.mean() - data.eps_mse(sch)[k]) < 4 * se
    other = GaussianData(data.mean + 0.1, data.cov * 1.3)
    perturbed = {
        "scaled x1.15": 1.15 * e_opt,
        "shifted +0.1": e_opt + 0.1,
        "wrong step k+20": f_opt(xt, kk + 20),
        "wrong data": other.optimal_eps(sch)(xt, kk),
    }
    for name, e in perturbed.items():
        d = ((eps - e) ** 2).sum(-1) - err_opt  # paired difference of squared errors
        assert d.mean() > 4 * d.std() / math.sqrt(N), f"{name}: not significantly worse than the MMSE predictor"
        # orthogonality: the excess equals E‖f − ε̂‖² exactly (the cross term has mean zero)
        cross = d - ((e - e_opt) ** 2).sum(-1)
        assert cross.mean().abs() < 4 * cross.std() / math.sqrt(N), f"{name}: cross term not zero-mean"


def test_optimal_eps_shapes_and_bad_input():
    data, sch = make_gaussian(D=4), NoiseSchedule.linear(50)
    f = data.optimal_eps(sch)
    x = torch.randn(3, 1, 2, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    out = f(x, torch.tensor([0, 10, 49]))
    assert out.shape == x.shape and out.dtype == F64
    assert torch.allclose(out.reshape(3, 4)[1], f(x.reshape(3, 4)[1:2], 10)[0], rtol=1e-13, atol=0)
    with pytest.raises(ValueError, match="out of range"):
        f(x, torch.tensor([0, 10, 50]))
    with pytest.raises(ValueError, match="dimensions"):
        f(torch.zeros(3, 5, dtype=F64), 0)
    with pytest.raises(ValueError, match="positive definite"):
        GaussianData(torch.zeros(2), torch.tensor([[1.0, 2.0], [2.0, 1.0]]))
    with pytest.raises(ValueError, match="shape"):
        GaussianData(torch.zeros(2), torch.eye(3))
    with pytest.raises(ValueError, match="symmetric"):
        GaussianData(torch.zeros(2), torch.tensor([[1.0, 0.5], [0.0, 1.0]]))


def test_data_density_sampling_and_entropy():
    data = make_gaussian(D=3)
    x = data.sample(5000, torch.Generator().manual_seed(2))
    ref = stats.multivariate_normal(data.mean.numpy(), data.cov.numpy())
    np.testing.assert_allclose(data.log_prob(x[:20]).numpy(), ref.logpdf(x[:20].numpy()), rtol=1e-12)
    assert math.isclose(data.entropy(), ref.entropy(), rel_tol=1e-12)
    se = x.std(0) / math.sqrt(len(x))
    assert ((x.mean(0) - data.mean).abs() < 4 * se).all()
    state = torch.get_rng_state()
    a = data.sample(3, torch.Generator().manual_seed(7))
    assert torch.equal(a, data.sample(3, torch.Generator().manual_seed(7)))
    assert torch.equal(state, torch.get_rng_state()), "sampling touched the global RNG"


# --------------------------------------------------------------------------------------------------------------
# Closed-form bound: independent routes
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variance", VARIANCES)
def test_bound_terms_equal_eps_weight_times_minimum_mse(variance):
    """E L_{t−1} = D·C(β̃_t, σ_t²) + w_t E‖ε − ε̂‖² (E8 const, E9 weight); E L_0 = D/2 log(2πσ_1²) + w_1 E‖ε − ε̂‖²."""
    data, sch = make_gaussian(D=3), NoiseSchedule.cosine(300)
    b = data.expected_bound(sch, variance)
    w = engine_eps_weight(sch, variance)
    mse = data.eps_mse(sch)
    sigma2 = reverse_variance(sch, None, variance)
    const = get("mean_matching").torch("const")  # C(var_q, sigma2), per dimension (SymPy, lambdified)
    D = data.dim
    expected = D * const(sch.posterior_variance[1:], sigma2[1:]) + w[1:] * mse[1:]
    torch.testing.assert_close(b.terms[1:], expected, rtol=1e-10, atol=1e-13)
    dec = D / 2 * torch.log(2 * math.pi * sigma2[0]) + w[0] * mse[0]
    torch.testing.assert_close(b.decoder, dec, rtol=1e-10, atol=1e-13)
    assert torch.isclose(b.total, b.prior + b.terms.sum(), rtol=1e-14)


def _forward_joint(sch, D, x0_mean, x0_chol):
    """Mean ((T+1)D,) and covariance of q(x_{0:T}) built step by step: x_t = √α_t x_{t−1} + √β_t ξ_t."""
    T = sch.T
    n = (T + 1) * D
    rows = [torch.zeros(D, n, dtype=F64)]
    rows[0][:, :D] = x0_chol
    means = [x0_mean]
    for t in range(1, T + 1):
        r = sch.alphas[t - 1].sqrt() * rows[-1]
        r[:, t * D : (t + 1) * D] += sch.betas[t - 1].sqrt() * torch.eye(D, dtype=F64)
        rows.append(r)
        means.append(sch.alphas[t - 1].sqrt() * means[-1])
    L = torch.cat(rows)
    return torch.cat(means), L @ L.T


def _reverse_joint(sch, D, eps_model, variance):
    """Mean and covariance of p_θ(x_{0:T}): x_T ~ N(0, I), x_{t−1} = A_t x_t + c_t + σ_t ζ_t, with (A_t, c_t)
    read off the engine's reverse_mean applied to the ε-model (original coordinates, no eigenbasis)."""
    T = sch.T
    n = (T + 1) * D
    rows = {T: torch.zeros(D, n, dtype=F64)}
    rows[T][:, T * D :] = torch.eye(D, dtype=F64)
    means = {T: torch.zeros(D, dtype=F64)}
    sigma2 = reverse_variance(sch, None, variance)
    for t in range(T, 0, -1):
        A, c = affine_coefficients(lambda x, k: reverse_mean(sch, x, k, eps_model(x, k)), D, t - 1)
        r = A @ rows[t]
        r[:, (t - 1) * D : t * D] += sigma2[t - 1].sqrt() * torch.eye(D, dtype=F64)
        rows[t - 1], means[t - 1] = r, A @ means[t] + c
    L = torch.cat([rows[t] for t in range(T + 1)])
    return torch.cat([means[t] for t in range(T + 1)]), L @ L.T


def _mvn_kl(m1, S1, m2, S2):
    n = len(m1)
    S2inv = torch.linalg.inv(S2)
    d = m2 - m1
    return 0.5 * (torch.trace(S2inv @ S1) + d @ S2inv @ d - n + torch.logdet(S2) - torch.logdet(S1))


@pytest.mark.parametrize("variance", VARIANCES)
@pytest.mark.parametrize("schedule", [NoiseSchedule.linear(4, 0.05, 0.4), NoiseSchedule.cosine(6)])
def test_closed_form_equals_dense_joint_gaussians(schedule, variance):
    """E_data[bound] = KL(q(x_{0:T}) ‖ p_θ(x_{0:T})) + H;  the model marginal = the x_0 block of p_θ(x_{0:T});
    the pointwise bound = E_{q(x_{1:T}|x_0)}[log q(x_{1:T}|x_0) − log p_θ(x_{0:T})]."""
    data, sch = make_gaussian(D=2, seed=3), schedule
    D, T = data.dim, sch.T
    mq, Sq = _forward_joint(sch, D, data.mean, torch.linalg.cholesky(data.cov))
    mp, Sp = _reverse_joint(sch, D, data.optimal_eps(sch), variance)
    kl = _mvn_kl(mq, Sq, mp, Sp)
    b = data.expected_bound(sch, variance)
    assert math.isclose(float(b.total), float(kl) + data.entropy(), rel_tol=1e-10)

    M, V = data.model_marginal(sch, variance)
    torch.testing.assert_close(M, mp[:D], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(V, Sp[:D, :D], rtol=1e-10, atol=1e-12)
    x0 = torch.tensor([[0.1, -0.2], [1.5, 2.0], [-3.0, 0.5]], dtype=F64)
    ref = stats.multivariate_normal(mp[:D].numpy(), Sp[:D, :D].numpy()).logpdf(x0.numpy())
    np.testing.assert_allclose(data.model_log_marginal(sch, variance, x0).numpy(), ref, rtol=1e-10)

    pb = data.pointwise_bound(sch, variance, x0)
    Sp_inv = torch.linalg.inv(Sp)
    n = (T + 1) * D
    for i in range(len(x0)):
        m_c, S_c = _forward_joint(sch, D, x0[i], torch.zeros(D, D, dtype=F64))  # q(x_{1:T}|x_0), x_0 fixed
        d = m_c - mp
        neg_log_p = 0.5 * (n * math.log(2 * math.pi) + torch.logdet(Sp) + torch.trace(Sp_inv @ S_c) + d @ Sp_inv @ d)
        entropy_q = 0.5 * torch.logdet(2 * math.pi * math.e * S_c[D:, D:])
        assert math.isclose(float(pb.total[i]), float(neg_log_p - entropy_q), rel_tol=1e-9)


@pytest.mark.parametrize("variance", VARIANCES)
def test_pointwise_bound_never_below_model_nll(variance):
    data = make_gaussian(D=3, seed=4)
    gen = torch.Generator().manual_seed(4)
    x0 = torch.cat([data.sample(200, gen), data.mean + 5 * torch.randn(20, 3, dtype=F64, generator=gen)])
    for sch in (NoiseSchedule.linear(10), NoiseSchedule.linear(1000), NoiseSchedule.cosine(100)):
        pb = data.pointwise_bound(sch, variance, x0)
        nll = -data.model_log_marginal(sch, variance, x0)
        gap = pb.total - nll  # = KL(q(x_{1:T}|x_0) ‖ p_θ(x_{1:T}|x_0)) ≥ 0
        assert (gap > -1e-9 * nll.abs().clamp(min=1)).all(), f"{sch}: bound below −log p_θ by {-gap.min():.3g}"
        # over the data the pointwise bound averages to the expected bound (its mean is a quadratic in x_0)
        tot = pb.total[:200]
        exp = data.expected_bound(sch, variance)
        assert abs(tot.mean() - exp.total) < 4 * tot.std() / math.sqrt(len(tot))
        ce = data.model_cross_entropy(sch, variance)
        assert float(exp.total) >= ce >= data.entropy()


def test_gap_shrinks_with_T():
    """The gap of the MMSE model's bound, T = 10 .. 10000 (printed with ``pytest -s``).

    Asserted: gaps are ≥ 0 and bound − H ≥ bound − E[−log p_θ] (theorems) for both variances; the gaps strictly
    decrease with T for σ_t² = β_t.  Not asserted for σ_t² = β̃_t: there the first steps' reverse variance
    β̃_t = β_t(1 − ᾱ_{t−1})/(1 − ᾱ_t) stays below the true one (≈ β_t while 1 − ᾱ_t ≪ λ) at any T, so the gap
    levels off at ≈ 0.442 nats/dim instead of vanishing (next test) and is not monotone for the cosine schedule.
    """
    data = make_gaussian(D=2)
    Ts = (10, 100, 1000, 10000)
    tables = []
    for make in (NoiseSchedule.linear, NoiseSchedule.cosine):
        for variance in VARIANCES:
            rows = gap_vs_T(data, make, Ts, variance)
            tables += rows
            gm = [r["gap_model"] for r in rows]
            ge = [r["gap_entropy"] for r in rows]
            assert all(a >= 0 and b >= a for a, b in zip(gm, ge))
            if variance == "beta":
                assert all(a > b for a, b in zip(gm, gm[1:])), f"{make.__name__}: gap vs p_θ not decreasing: {gm}"
                assert all(a > b for a, b in zip(ge, ge[1:])), f"{make.__name__}: gap vs H not decreasing: {ge}"
    print("\n" + format_gap_table(tables))


def test_standard_normal_data_beta_variance_is_exact():
    """Data N(0, I): x_t ~ N(0, I) at every t, the MMSE model's step N(√α_t x_t, β_t) is the exact reverse of the
    stationary chain, so with σ_t² = β_t the bound is tight at any T: bound = −log p_θ(x_0) = −log N(x_0; 0, I)."""
    data = GaussianData(torch.zeros(3, dtype=F64), torch.eye(3, dtype=F64))
    betas = torch.rand(7, dtype=F64, generator=torch.Generator().manual_seed(15)) * 0.5 + 0.01
    sch = NoiseSchedule.from_betas(betas)
    assert math.isclose(float(data.expected_bound(sch, "beta").total), data.entropy(), rel_tol=1e-12)
    x0 = torch.randn(5, 3, dtype=F64, generator=torch.Generator().manual_seed(16))
    torch.testing.assert_close(data.pointwise_bound(sch, "beta", x0).total, -data.log_prob(x0), rtol=1e-12, atol=0)
    torch.testing.assert_close(data.model_log_marginal(sch, "beta", x0), data.log_prob(x0), rtol=1e-12, atol=0)


def test_posterior_variance_gap_tends_to_euler_gamma_constant():
    """With σ_t² = β̃_t the gap does not vanish as T → ∞.  While 1 − ᾱ_t ≈ tδ ≪ λ, step t ≥ 2 costs
    1/(2(t−1)) nats/dim with σ² = β̃_t and ½ log(t/(t−1)) with σ² = β_t; the sum of the differences is
    ½ Σ_n (1/n − log(1 + 1/n)) = γ/2 (Euler's constant); the clipped decoder variance β̃_2 ≈ β_1/2 adds
    ½(1 − ln 2).  So bound(β̃) − bound(β) → D(γ + 1 − ln 2)/2 ≈ 0.442 D nats as δ = β_1 → 0 (cosine: δ ∝ 1/T)."""
    errors = _posterior_minus_beta_errors((100, 1000, 10000))
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 0.05 * EULER_GAP, errors


@pytest.mark.slow
def test_posterior_variance_gap_limit_large_T():
    errors = _posterior_minus_beta_errors((10000, 100000, 1000000))
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 0.001 * EULER_GAP, errors


EULER_GAP = 0.5 * (0.5772156649015329 + 1 - math.log(2))  # nats/dim, (γ + 1 − ln 2)/2


def _posterior_minus_beta_errors(Ts) -> list[float]:
    """|bound(β̃) − bound(β) − (γ + 1 − ln 2)/2| for N(0, 1) data under cosine(T), nats."""
    data = GaussianData(torch.zeros(1, dtype=F64), torch.eye(1, dtype=F64))
    errors = []
    for T in Ts:
        sch = NoiseSchedule.cosine(T)
        diff = data.expected_bound(sch, "posterior").total - data.expected_bound(sch, "beta").total
        errors.append(abs(float(diff) - EULER_GAP))
    return errors


# --------------------------------------------------------------------------------------------------------------
# The engine's estimators vs. the closed forms
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variance", VARIANCES)
def test_engine_full_estimator_matches_closed_form(variance):
    """variational_bound(estimator="full", decoder="gaussian") on x_0 ~ data: its mean = expected_bound, and each
    image's value - the closed-form pointwise bound has mean zero (both within 4 stderr); every term too."""
    data, sch = make_gaussian(D=3), NoiseSchedule.cosine(30)
    N = 600
    x0 = data.sample(N, torch.Generator().manual_seed(10))
    eps_model = data.optimal_eps(sch)
    r = variational_bound(eps_model, sch, x0, decoder="gaussian", variance=variance, generator=11, chunk_size=N * 30)
    exp = data.expected_bound(sch, variance)
    assert abs(r.mean() - float(exp.total)) < 4 * r.mean_stderr()
    se_terms = r.terms.std(0) / math.sqrt(N)
    assert ((r.terms.mean(0) - exp.terms).abs() < 4 * se_terms).all()
    pb = data.pointwise_bound(sch, variance, x0)
    torch.testing.assert_close(r.prior, pb.prior, rtol=1e-12, atol=1e-14)  # L_T has no noise: exact per image
    diff = r.total - pb.total
    assert diff.mean().abs() < 4 * diff.std() / math.sqrt(N)


@pytest.mark.parametrize("variance", VARIANCES)
def test_engine_full_estimator_per_image(variance):
    """Fixed images (one 4σ out), each repeated R times: the mean of the engine's ``full`` values, total and
    per term, equals the closed-form pointwise bound within 4 stderr; the bound stays above −log p_θ(x_0)."""
    data, sch = make_gaussian(D=2, seed=1), NoiseSchedule.linear(25, 1e-3, 0.4)
    x0 = torch.stack([data.mean, data.mean + 0.3, data.mean + 4 * data.cov.diagonal().sqrt()])
    R = 400
    x0_rep = x0.repeat_interleave(R, 0)
    r = variational_bound(
        data.optimal_eps(sch), sch, x0_rep, decoder="gaussian", variance=variance, generator=12, chunk_size=3 * R * 25
    )
    pb = data.pointwise_bound(sch, variance, x0)
    tot, terms = r.total.reshape(3, R), r.terms.reshape(3, R, sch.T)
    assert ((tot.mean(1) - pb.total).abs() < 4 * tot.std(1) / math.sqrt(R)).all()
    se = terms.std(1) / math.sqrt(R)
    assert ((terms.mean(1) - pb.terms).abs() < 4 * se).all()
    assert (pb.total >= -data.model_log_marginal(sch, variance, x0)).all()


@pytest.mark.slow
@pytest.mark.parametrize("variance", VARIANCES)
def test_engine_full_estimator_matches_closed_form_T1000(variance):
    """As the fast test, at the published scale: cosine(1000), 1000 images (1M network evaluations)."""
    data, sch = make_gaussian(D=4, seed=6), NoiseSchedule.cosine(1000)
    N = 1000
    x0 = data.sample(N, torch.Generator().manual_seed(17))
    r = variational_bound(data.optimal_eps(sch), sch, x0, decoder="gaussian", variance=variance, generator=18)
    assert abs(r.mean() - float(data.expected_bound(sch, variance).total)) < 4 * r.mean_stderr()
    diff = r.total - data.pointwise_bound(sch, variance, x0).total
    assert diff.mean().abs() < 4 * diff.std() / math.sqrt(N)


@pytest.mark.parametrize("estimator", ["uniform", "stratified", "importance"])
def test_engine_sampled_estimators_unbiased_against_closed_form(estimator):
    """Sampled estimators vs. the exact per-image expectation: mean of (estimate − closed form) over images is
    zero within 4 of its standard error computed from the estimator's own reported stderr (honest error bars)."""
    data, sch = make_gaussian(D=2, seed=2), NoiseSchedule.cosine(100)
    N = 300
    x0 = data.sample(N, torch.Generator().manual_seed(13))
    r = variational_bound(
        data.optimal_eps(sch), sch, x0, estimator=estimator, num_samples=16, decoder="gaussian", generator=14
    )
    exact = data.pointwise_bound(sch, "posterior", x0).total
    err = (r.total - exact).mean()
    assert err.abs() < 4 * r.mean_stderr(over="estimator")
    # the reported variance is unbiased: E[(estimate − exact)² − stderr²] = 0, within 4 stderr over the images
    d = (r.total - exact) ** 2 - r.stderr**2
    assert d.mean().abs() < 4 * d.std() / math.sqrt(N), f"squared error − reported variance: {d.mean():.3g}"


# --------------------------------------------------------------------------------------------------------------
# Gaussian mixture
# --------------------------------------------------------------------------------------------------------------


def test_mixture_with_one_component_is_the_gaussian_oracle():
    g = make_gaussian(D=2, seed=5)
    mix = GaussianMixture2D(torch.ones(1), g.mean.unsqueeze(0), g.cov.unsqueeze(0))
    sch = NoiseSchedule.cosine(50)
    x = torch.randn(64, 2, dtype=F64, generator=torch.Generator().manual_seed(5))
    k = torch.arange(64) % 50
    torch.testing.assert_close(mix.optimal_eps(sch)(x, k), g.optimal_eps(sch)(x, k), rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(mix.log_density(x), g.log_prob(x), rtol=1e-13, atol=0)


def test_mixture_density_integrates_to_one_and_matches_scipy():
    mix = make_mixture()
    sd = float(mix.covs.diagonal(dim1=1, dim2=2).max().sqrt())
    lo, hi = mix.means.min(0).values - 9 * sd, mix.means.max(0).values + 9 * sd
    n = 500
    gx, gy = (torch.linspace(float(lo[i]), float(hi[i]), n, dtype=F64) for i in range(2))
    X, Y = torch.meshgrid(gx, gy, indexing="ij")
    dens = mix.log_density(torch.stack([X.ravel(), Y.ravel()], dim=1)).exp()
    integral = float(dens.sum() * (gx[1] - gx[0]) * (gy[1] - gy[0]))
    assert abs(integral - 1) < 1e-8, f"∫ p = {integral}"
    pts = torch.randn(10, 2, dtype=F64, generator=torch.Generator().manual_seed(6))
    ref = sum(
        float(w) * stats.multivariate_normal(m.numpy(), S.numpy()).pdf(pts.numpy())
        for w, m, S in zip(mix.weights, mix.means, mix.covs)
    )
    np.testing.assert_allclose(mix.log_density(pts).numpy(), np.log(ref), rtol=1e-12)


def test_mixture_optimal_eps_matches_importance_sampling():
    """E[ε|x_t] by self-normalised importance sampling with prior draws x_0^(i): weights N(x_t; √ᾱ x_0^(i), 1−ᾱ),
    ε^(i) = (x_t − √ᾱ x_0^(i))/√(1−ᾱ); delta-method standard error."""
    mix, sch = make_mixture(), NoiseSchedule.cosine(100)
    gen = torch.Generator().manual_seed(8)
    f = mix.optimal_eps(sch)
    N = 20000
    for k in (20, 50, 80):
        abar, one_m = sch.alpha_bars[k], sch.one_minus_alpha_bars[k]
        kk = torch.full((3,), k)
        x_t = q_sample(sch, mix.sample(3, gen), kk, torch.randn(3, 2, dtype=F64, generator=gen))
        exact = f(x_t, kk)
        for j in range(3):
            x0 = mix.sample(N, gen)
            e = (x_t[j] - abar.sqrt() * x0) / one_m.sqrt()  # (N, 2)
            logw = -0.5 * (e**2).sum(-1)  # log N(x_t; √ᾱ x_0, (1−ᾱ) I) up to a constant
            w = torch.softmax(logw, 0)
            est = (w.unsqueeze(1) * e).sum(0)
            se = ((w.unsqueeze(1) ** 2) * (e - est) ** 2).sum(0).sqrt()
            assert ((est - exact[j]).abs() < 4 * se).all(), f"k={k}: IS {est.tolist()} ± {se.tolist()} vs {exact[j]}"
    assert torch.allclose(mix.responsibilities(sch, x_t, kk).sum(-1), torch.ones(3, dtype=F64))


def test_mixture_sampling_and_bad_input():
    mix = make_mixture()
    x = mix.sample(20000, torch.Generator().manual_seed(9))
    mean = (mix.weights.unsqueeze(1) * mix.means).sum(0)
    assert ((x.mean(0) - mean).abs() < 4 * x.std(0) / math.sqrt(len(x))).all()
    assert torch.equal(mix.sample(5, torch.Generator().manual_seed(1)), mix.sample(5, torch.Generator().manual_seed(1)))
    with pytest.raises(ValueError, match="2-D"):
        GaussianMixture2D(torch.ones(1), torch.zeros(1, 3), torch.eye(3).unsqueeze(0))
    with pytest.raises(ValueError, match="positive"):
        GaussianMixture(torch.tensor([1.0, -1.0]), torch.zeros(2, 2), torch.eye(2).repeat(2, 1, 1))
    with pytest.raises(ValueError, match="component 1"):
        GaussianMixture(torch.ones(2), torch.zeros(2, 2), torch.stack([torch.eye(2), -torch.eye(2)]))

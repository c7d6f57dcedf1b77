"""The variational bound: three routes agree, sampled estimators are unbiased with honest error bars, the
discretized decoder is a proper distribution, bad input raises.

The test model is a fixed affine ε-model ε̂(x_t, k) = M_k x_t + c_k (float64), for which the expected bound
over ε has a closed form computed here from the lambdified SymPy results (E1 ``kl``, E8 ``const``, E9
``weight``): with x_t = a x_0 + s ε (a = √ᾱ_t, s = √(1−ᾱ_t)),  E‖ε − ε̂‖² = ‖I − s M_k‖_F² + ‖a M_k x_0 + c_k‖².
Statistical checks: |estimate − exact| < 4 standard errors, fixed seeds.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import log_ndtr
from scipy.stats import norm

from elbo_lab import diffusion as D
from elbo_lab.bound import (
    BoundResult,
    ModelSpec,
    bound_term,
    estimate_proposal,
    keyed_noise,
    l_simple,
    noise_seeds,
    pilot_steps,
    prior_term,
    trajectory_bound,
    variational_bound,
)
from elbo_lab.gaussian import discretized_gaussian_log_likelihood, normal_log_prob
from elbo_lab.schedule import NoiseSchedule
from elbo_lab.symbolic import reference

T, DIM, LEVELS = 20, 4, 17
F64 = torch.float64


class AffineEps:
    """ε̂(x, k) = M_k x + c_k with M_k = √(1−ᾱ_t) I + δ A_k (near the MMSE predictor of unit-variance data)."""

    def __init__(self, schedule: NoiseSchedule, dim: int = DIM, delta: float = 0.2, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        s = schedule.one_minus_alpha_bars.sqrt()
        self.M = s[:, None, None] * torch.eye(dim, dtype=F64) + delta * torch.randn(
            schedule.T, dim, dim, generator=g, dtype=F64
        )
        self.c = delta * torch.randn(schedule.T, dim, generator=g, dtype=F64)
        self.batches: list[int] = []

    def __call__(self, x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.shape[0])
        return torch.einsum("bij,bj->bi", self.M[k], x) + self.c[k]


@pytest.fixture(scope="module")
def schedule():
    return NoiseSchedule.linear(T, 1e-3, 0.4)


@pytest.fixture(scope="module")
def model(schedule):
    return AffineEps(schedule)


@pytest.fixture(scope="module")
def x0():
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, LEVELS, (3, DIM), generator=g).to(F64) * 2 / (LEVELS - 1) - 1


def exact_terms(model: AffineEps, schedule: NoiseSchedule, x0: torch.Tensor, variance: str) -> np.ndarray:
    """E_ε of each summand (N, T), Gaussian decoder at k = 0, from the SymPy results (independent route)."""
    s = schedule
    a, sd = s.alpha_bars.sqrt().numpy(), s.one_minus_alpha_bars.sqrt().numpy()
    M, c, x = model.M.numpy(), model.c.numpy(), x0.numpy()
    eye = np.eye(x.shape[1])
    sigma2 = D.reverse_variance(s, None, variance).numpy()
    beta, abp = s.betas.numpy(), s.alpha_bars_prev.numpy()
    w = reference("eps_weight", "weight", beta=beta, alpha_bar_prev=abp, sigma2=sigma2)  # (T,)
    out = np.empty((x.shape[0], s.T))
    for k in range(s.T):
        mse = ((eye - sd[k] * M[k]) ** 2).sum() + ((a[k] * x @ M[k].T + c[k]) ** 2).sum(1)  # (N,)
        if k == 0:
            out[:, k] = w[k] * mse + 0.5 * x.shape[1] * np.log(2 * np.pi * sigma2[k])
        else:
            const = reference("mean_matching", "const", var_q=s.posterior_variance[k].item(), sigma2=sigma2[k])
            out[:, k] = w[k] * mse + x.shape[1] * const
    return out


def exact_prior(schedule: NoiseSchedule, x0: torch.Tensor) -> np.ndarray:
    ab = schedule.alpha_bars[-1].item()
    mean = reference("forward_marginal", "mean", x0=x0.numpy(), alpha_bar=ab)
    var = reference("forward_marginal", "variance", alpha_bar=ab)
    return reference("gaussian_kl", "kl", mu1=mean, var1=var, mu2=0.0, var2=1.0).sum(1)


# -- terms --------------------------------------------------------------------------------------------------------


def test_prior_term_vs_sympy(schedule, x0):
    np.testing.assert_allclose(prior_term(schedule, x0).numpy(), exact_prior(schedule, x0), rtol=1e-10)


@pytest.mark.parametrize("decoder", ["gaussian", "discretized"])
@pytest.mark.parametrize("variance", ["posterior", "beta"])
def test_kl_form_equals_eps_form_term_by_term(model, schedule, x0, decoder, variance):
    """Routes (1) and (2): the same ε draws, the closed-form KLs vs. Σ w_t‖ε − ε̂‖² (+ variance constant)."""
    kw = dict(decoder=decoder, levels=LEVELS, variance=variance, generator=11)
    kl = variational_bound(model, schedule, x0, form="kl", **kw)
    eps = variational_bound(model, schedule, x0, form="eps", **kw)
    np.testing.assert_allclose(eps.terms.numpy(), kl.terms.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(eps.total.numpy(), kl.total.numpy(), rtol=1e-10)
    assert kl.n_evals == 2 * x0.shape[0] * T and bool((kl.stderr > 0).all()) and kl.eps_draws == 2
    torch.testing.assert_close(kl.decoder, kl.terms[:, 0])


def test_kl_term_vs_sympy_kl(model, schedule, x0):
    """One KL summand recomputed from E6 ``mean``/``variance`` and E8 ``kl`` (SymPy) at the same x_t."""
    k = torch.tensor([5, 5, 5])
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(2), dtype=F64)
    got = bound_term(model, schedule, x0, k, noise, decoder="gaussian", variance="beta")
    xt = D.q_sample(schedule, x0, k, noise)
    beta, abp = schedule.betas[5].item(), schedule.alpha_bars_prev[5].item()
    mu_q = reference("posterior", "mean", x0=x0.numpy(), xt=xt.numpy(), beta=beta, alpha_bar_prev=abp)
    var_q = reference("posterior", "variance", beta=beta, alpha_bar_prev=abp)
    mu_p = reference("posterior", "mean_eps", xt=xt.numpy(), eps=model(xt, k).numpy(), beta=beta, alpha_bar_prev=abp)
    want = reference("mean_matching", "kl", mu_q=mu_q, var_q=var_q, mu_p=mu_p, var_p=beta).sum(1)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10)


@pytest.mark.parametrize("variance", ["posterior", "beta"])
def test_full_estimator_matches_closed_form_per_step(model, schedule, x0, variance):
    """Each column of ``full`` (one ε per step) averages to the exact E_ε L_k (within 4 standard errors)."""
    R = 600
    xr = x0[:1].repeat(R, 1)
    r = variational_bound(model, schedule, xr, decoder="gaussian", variance=variance, generator=3, chunk_size=4096)
    exact = exact_terms(model, schedule, x0[:1], variance)[0]
    se = r.terms.std(0).numpy() / math.sqrt(R)
    assert np.all(np.abs(r.terms.mean(0).numpy() - exact) < 4 * se), (r.terms.mean(0).numpy(), exact, se)
    np.testing.assert_allclose(r.prior.numpy(), exact_prior(schedule, x0[:1])[0], rtol=1e-10)
    total = exact.sum() + exact_prior(schedule, x0[:1])[0]
    assert abs(r.mean() - total) < 4 * r.mean_stderr()


def _trajectory_nll(model, schedule, x0, R, decoder, variance, seed):
    """Route (3): log q(x_{1:T}|x_0) − log p_θ(x_{0:T}) on R trajectories sampled forward from q, (R,)."""
    g = torch.Generator().manual_seed(seed)
    s = schedule
    x = x0.expand(R, -1).clone()
    log_q = torch.zeros(R, dtype=F64)
    traj = [x]
    for k in range(s.T):  # x_t = √α_t x_{t−1} + √β_t z
        mean, var = s.alphas[k].sqrt() * x, s.betas[k]
        x = mean + var.sqrt() * torch.randn(x.shape, generator=g, dtype=F64)
        log_q += normal_log_prob(x, mean, var).sum(1)
        traj.append(x)
    log_p = normal_log_prob(traj[-1], torch.zeros_like(x), torch.tensor(1.0, dtype=F64)).sum(1)
    for k in range(s.T - 1, -1, -1):
        kk = torch.full((R,), k)
        mu = D.reverse_mean(s, traj[k + 1], kk, model(traj[k + 1], kk))
        sigma2 = D.reverse_variance(s, k, variance)
        if k == 0 and decoder == "discretized":
            log_p += discretized_gaussian_log_likelihood(traj[0], mu, sigma2, LEVELS).sum(1)
        else:
            log_p += normal_log_prob(traj[k], mu, sigma2).sum(1)
    return log_q - log_p


@pytest.mark.parametrize(("decoder", "variance"), [("gaussian", "posterior"), ("discretized", "beta")])
def test_trajectory_monte_carlo_matches_bound(model, schedule, x0, decoder, variance):
    """Route (3) vs. route (1): whole-trajectory Monte Carlo within 4 combined standard errors."""
    R = 20000
    nll = _trajectory_nll(model, schedule, x0[:1], R, decoder, variance, seed=5)
    mc, mc_se = nll.mean().item(), nll.std().item() / math.sqrt(R)
    xr = x0[:1].repeat(2000, 1)
    full = variational_bound(
        model, schedule, xr, decoder=decoder, levels=LEVELS, variance=variance, generator=6, chunk_size=8192
    )
    se = math.hypot(mc_se, full.mean_stderr())
    assert abs(mc - full.mean()) < 4 * se, (mc, full.mean(), se)
    if decoder == "gaussian":
        exact = exact_terms(model, schedule, x0[:1], variance).sum() + exact_prior(schedule, x0[:1])[0]
        assert abs(mc - exact) < 4 * mc_se, (mc, exact, mc_se)


@pytest.mark.parametrize("variance", ["posterior", "beta"])
def test_library_trajectory_route_matches_closed_form(model, schedule, x0, variance):
    """``trajectory_bound`` (trajectories drawn as q(x_T|x_0) ∏ q(x_{t−1}|x_t, x_0)) has the closed-form expected
    bound as its mean, and agrees with the forward-sampled route above, within 4 standard errors."""
    R = 20000
    v = trajectory_bound(model, schedule, x0[:1].repeat(R, 1), decoder="gaussian", variance=variance, generator=9)
    mc, mc_se = v.mean().item(), v.std().item() / math.sqrt(R)
    exact = exact_terms(model, schedule, x0[:1], variance).sum() + exact_prior(schedule, x0[:1])[0]
    assert abs(mc - exact) < 4 * mc_se, (mc, exact, mc_se)
    fwd = _trajectory_nll(model, schedule, x0[:1], R, "gaussian", variance, seed=10)
    se = math.hypot(mc_se, fwd.std().item() / math.sqrt(R))
    assert abs(mc - fwd.mean().item()) < 4 * se
    assert mc_se < 0.05 * abs(exact)  # the comparison has teeth


# -- sampled estimators -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ramp():
    """A well-conditioned case (terms of similar size, D = 16) where the per-run CLT holds at M = 8."""
    s = NoiseSchedule.from_betas(np.linspace(0.05, 0.3, T))
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, LEVELS, (20, 16), generator=g).to(F64) * 2 / (LEVELS - 1) - 1
    m = AffineEps(s, dim=16)
    exact = exact_terms(m, s, x, "posterior").sum(1) + exact_prior(s, x)  # (20,) E_ε of each image's bound
    return s, m, x, torch.from_numpy(exact)


def _coverage_check(r: BoundResult, exact: torch.Tensor, reps: int) -> None:
    """r holds ``reps`` repetitions of the same images (rows rep-major).  Checks: unbiased (grand mean within
    4 standard errors of the exact value), per-image stderr² unbiased for the spread of the repetitions, and
    the nominal 95% interval of each run's dataset mean covers the exact mean in 90–99% of the runs."""
    n = exact.shape[0]
    dev = r.total.reshape(reps, n) - exact  # (reps, n)
    grand_se = dev.mean(1).std().item() / math.sqrt(reps)
    assert abs(dev.mean().item()) < 4 * grand_se, (dev.mean().item(), grand_se)
    ratio = r.stderr.pow(2).mean().sqrt().item() / dev.pow(2).mean().sqrt().item()
    assert 0.85 < ratio < 1.18, ratio
    se = r.stderr.reshape(reps, n).pow(2).sum(1).sqrt() / n  # mean_stderr(over="estimator") of each run
    covered = (dev.mean(1).abs() <= 1.96 * se).double().mean().item()
    assert 0.90 <= covered <= 0.99, covered


@pytest.mark.parametrize(
    ("estimator", "num_samples", "exact_decoder", "extra"),
    [
        ("uniform", 8, True, {}),
        ("stratified", 8, True, {}),
        ("importance", 8, True, {}),  # plain importance sampling, k_j ~ p i.i.d., weights 1/p_k
        ("importance", 7, True, {}),
        ("importance", 8, True, {"stratified_importance": True}),
        ("importance", 4, True, {"stratified_importance": True}),
        ("importance", 8, True, {"decoder_draws": 2}),
        ("uniform", 8, False, {}),
        ("stratified", 8, False, {}),
        ("importance", 8, False, {}),
    ],
)
def test_sampled_estimators_unbiased_with_honest_intervals(ramp, estimator, num_samples, exact_decoder, extra):
    """300 runs over the same 20 images: unbiased, honest per-image stderr, 95% intervals cover 90–99%."""
    s, m, x, exact = ramp
    reps = 300
    kw = dict(decoder="gaussian", num_samples=num_samples, exact_decoder=exact_decoder, generator=21, **extra)
    r = variational_bound(m, s, x.repeat(reps, 1), estimator=estimator, **kw)
    n = reps * x.shape[0]
    R_dec = extra.get("decoder_draws", 4) if exact_decoder else 0
    assert r.take_all == []
    assert r.decoder_draws == (R_dec or None) and r.stratified_importance == bool(extra.get("stratified_importance"))
    assert r.n_evals == n * num_samples + r.n_pilot_evals + R_dec * n
    _coverage_check(r, exact, reps)
    # and the sampled mean agrees with ``full`` within their combined error bars
    full = variational_bound(m, s, x.repeat(20, 1), decoder="gaussian", generator=22)
    assert abs(r.mean() - full.mean()) < 4 * math.hypot(r.mean_stderr(), full.mean_stderr())


@pytest.mark.parametrize(
    ("strat", "exact_decoder", "heavy"),
    [(False, True, 3), (True, True, 3), (False, False, 0), (True, False, 0)],
)
def test_take_all_step_of_a_given_proposal(ramp, strat, exact_decoder, heavy):
    """A user proposal with p = 0.6 at one step: that step is taken whole (i.i.d. or stratified draws; with
    ``exact_decoder=False`` the heavy step is L_0 itself), counted in n_evals with max(4, ⌈0.6 M⌉) draws per image,
    its term is the mean of those draws, the result reports the proposal as given (reusable), and the estimate is
    unbiased with honest intervals (300 runs)."""
    s, m, x, exact = ramp
    p = torch.full((T,), 0.4 / (T - 1), dtype=F64)
    p[heavy] = 0.6
    reps, M = 300, 8
    kw = dict(decoder="gaussian", estimator="importance", num_samples=M, exact_decoder=exact_decoder)
    r = variational_bound(m, s, x.repeat(reps, 1), proposal=p, generator=24, stratified_importance=strat, **kw)
    lo = 1 if exact_decoder else 0
    share = 0.6 / p[lo:].sum().item()
    n = reps * x.shape[0]
    assert r.take_all == [heavy] and r.stratified_importance == strat
    assert r.n_evals == n * (M + (4 if exact_decoder else 0) + max(4, math.ceil(M * share)))
    assert bool(torch.isfinite(r.terms[:, heavy]).all()) and bool(torch.isfinite(r.total).all())
    assert torch.allclose(r.proposal, _check(p, lo))  # as given, not the sampling law over the other steps
    again = variational_bound(m, s, x, proposal=r.proposal, generator=24, stratified_importance=strat, **kw)
    assert again.take_all == [heavy]
    _coverage_check(r, exact, reps)


def _check(p: torch.Tensor, lo: int) -> torch.Tensor:
    q = p.clone()
    q[:lo] = 0
    return q / q.sum()


def test_full_reports_its_own_eps_noise(ramp):
    """``full`` (2 ε draws per step): its reported per-image stderr² is unbiased for the spread of its totals over
    independent noise, and its 95% intervals cover the exact E_ε bound (300 runs of the same 20 images)."""
    s, m, x, exact = ramp
    reps = 300
    r = variational_bound(m, s, x.repeat(reps, 1), decoder="gaussian", generator=31, chunk_size=8192)
    assert r.eps_draws == 2 and r.n_evals == 2 * reps * x.shape[0] * s.T
    _coverage_check(r, exact, reps)
    one = variational_bound(m, s, x, decoder="gaussian", eps_draws=1)
    assert one.n_evals == x.shape[0] * s.T and math.isnan(one.mean_stderr("estimator"))


@pytest.mark.parametrize("M", [8, 128])
def test_oracle_interval_coverage_fixed_seed(M):
    """Gaussian oracle (exact per-image bound in closed form, continuous decoder): importance, 2000 runs of 4
    images (coverage s.e. 0.5%: 93–97% is ±4 s.e. around 95%; with 400 runs it was ±1.8 s.e.: the first 400 of
    these runs give 92.5% at M = 8, while 4000 runs, measured once, gave 94.6%).  The reported stderr² must match
    the spread (ratio of rms 0.9–1.1) and each run's ``mean_ci`` (95%, Student t) must cover in 93–97%.  At M = 128 the
    decoder stratum carries ~30% of the variance: its variance var(draws)/R written /(2R) fails the ratio."""
    from elbo_lab.oracles.gaussian import GaussianData

    sch = NoiseSchedule.linear(100, scale_to_1000=True)
    oracle = GaussianData.random(16, seed=0)
    x = oracle.sample(4, generator=torch.Generator().manual_seed(3))
    exact = oracle.pointwise_bound(sch, "posterior", x).total
    reps, model = 2000, oracle.optimal_eps(sch)
    kw = dict(decoder="gaussian", estimator="importance", num_samples=M, chunk_size=8192)
    p = estimate_proposal(model, sch, x, decoder="gaussian", generator=1)
    r = variational_bound(model, sch, x.repeat(reps, 1), proposal=p, generator=41, **kw)
    dev = r.total.reshape(reps, 4) - exact
    ratio = r.stderr.pow(2).mean().sqrt().item() / dev.pow(2).mean().sqrt().item()
    assert 0.9 < ratio < 1.1, ratio
    covered = []
    for i in range(reps):  # each run's own BoundResult.mean_ci (Student t, Welch–Satterthwaite dof)
        sl = slice(4 * i, 4 * i + 4)
        run = BoundResult(r.total[sl], r.prior[sl], r.decoder[sl], r.terms[sl], r.stderr[sl], 0, 16, dof=r.dof[sl])
        lo, hi = run.mean_ci()
        covered.append(lo <= exact.mean().item() <= hi)
    assert 0.93 <= np.mean(covered) <= 0.97, np.mean(covered)


def test_importance_honest_on_skewed_terms(model, schedule, x0):
    """Most of the bound in one step (k = 1 carries ~90%): importance sampling with a pilot proposal stays honest."""
    reps = 200
    exact = torch.from_numpy(exact_terms(model, schedule, x0, "posterior").sum(1) + exact_prior(schedule, x0))
    kw = dict(decoder="gaussian", num_samples=8, generator=23)
    _coverage_check(variational_bound(model, schedule, x0.repeat(reps, 1), estimator="importance", **kw), exact, reps)


def test_importance_proposal_pilot_and_given(model, schedule, x0):
    p = estimate_proposal(model, schedule, x0, decoder="gaussian", generator=1)
    assert p.shape == (T,) and abs(p.sum().item() - 1) < 1e-12 and bool((p >= 0.01 / T).all())
    r = variational_bound(model, schedule, x0, estimator="importance", decoder="gaussian", proposal=p, num_samples=4)
    # k = 1 holds most of this model's bound: p_1 >= 1/2 makes it a take-all step (4 draws = max(4, ⌈4 p_1⌉))
    assert r.take_all == [1] and (p[1] / p[1:].sum()).item() >= 0.5
    assert r.n_pilot_evals == 0 and r.n_evals == 3 * 4 + 12 + 12  # + 4 decoder and 4 take-all evaluations per image
    # the result reports the proposal as given (k = 0 zeroed: the exact decoder is not sampled); k = 1 is taken
    # whole from it, so passing it back gives the same take-all step
    assert r.proposal[0] == 0 and torch.allclose(r.proposal, _check(p, 1))
    r2 = variational_bound(model, schedule, x0, estimator="importance", decoder="gaussian", pilot_images=2)
    p1 = estimate_proposal(model, schedule, x0[:2], decoder="gaussian", grid=64)[1:]
    R1 = max(4, math.ceil(32 * (p1[0] / p1.sum()).item()))  # the take-all step keeps its expected 32·p_1 draws
    assert r2.take_all == [1] and r2.n_pilot_evals == 2 * T * 4  # 2 pilot images x T steps x 4 ε draws
    assert r2.n_evals == 3 * 32 + 2 * T * 4 + 12 + 3 * R1


def test_pilot_grid():
    steps = pilot_steps(1000, 64)
    assert steps[0] == 0 and steps[1] == 1 and steps[-2:].tolist() == [998, 999] and len(steps) <= 65
    assert bool((steps[1:] > steps[:-1]).all())
    assert torch.equal(pilot_steps(20, 64), torch.arange(20)) and torch.equal(pilot_steps(20, None), torch.arange(20))


def test_proposal_on_a_grid_costs_and_interpolates(schedule, x0):
    m = AffineEps(schedule)
    p = estimate_proposal(m, schedule, x0, grid=6, decoder="gaussian", generator=1)
    assert sum(m.batches) == x0.shape[0] * len(pilot_steps(T, 6)) * 4 and p.shape == (T,)  # 4 ε draws per step
    assert abs(p.sum().item() - 1) < 1e-12 and bool((p > 0).all())


def test_proposal_interpolates_geometrically_between_grid_steps(schedule, x0):
    """Between two pilot steps the proposal (less its uniform part) is log-linear in k: its second differences
    in log vanish inside every grid interval.  Linear interpolation of √E[L²] (what the pilot did before: it put
    62% of a trained cosine model's proposal on the ~90 steps before its isolated last step) fails this."""
    sch = NoiseSchedule.linear(200, scale_to_1000=True)
    m = AffineEps(sch, delta=0.3, seed=2)
    mix = 0.01
    p = estimate_proposal(m, sch, x0, grid=12, decoder="gaussian", generator=1, mix=mix)
    q = (p - mix / sch.T) / (1 - mix)  # the pilot part, ∝ the interpolated √E[L_k²]
    steps = pilot_steps(sch.T, 12).tolist()
    assert len(steps) < 16
    wide = [(a, b) for a, b in zip(steps[:-1], steps[1:]) if b - a >= 3]
    assert len(wide) >= 4
    for a, b in wide:
        second = q[a : b + 1].log().diff().diff()  # (b − a − 1,) second differences of log q inside [a, b]
        assert second.abs().max().item() < 1e-9, (a, b, second.abs().max().item())


class SpikyOracleEps(AffineEps):
    """The Gaussian oracle's MMSE ε-predictor (affine: ε̂ = M_k x + c_k, read off on the basis vectors), made wrong
    at the last step only: c_{T−1} += ``bias``.  Its expected bound is in closed form (:func:`exact_terms`)."""

    def __init__(self, oracle, schedule: NoiseSchedule, bias: float):
        base, T_, dim = oracle.optimal_eps(schedule), schedule.T, oracle.dim
        pts = torch.cat([torch.zeros(1, dim, dtype=F64), torch.eye(dim, dtype=F64)])  # 0, e_1..e_D
        out = torch.stack([base(pts, torch.full((dim + 1,), k)) for k in range(T_)])  # (T, D + 1, D)
        self.c = out[:, 0].clone()
        self.M = (out[:, 1:] - out[:, :1]).transpose(1, 2).contiguous()  # M[k][:, j] = ε̂(e_j) − c
        self.c[-1] += bias
        self.batches = []


@pytest.mark.parametrize("bias", [0.045, 0.35])
def test_proposal_is_not_smeared_over_the_steps_before_an_isolated_last_step(bias):
    """A model wrong only at its last step (as a trained cosine-schedule DDPM is: β_T = 0.999, L_{T−1} ~20% of its
    bound, L_{T−2} ~0): the pilot's proposal puts that step's mass on it, not on the steps before it, and the
    importance intervals cover (2000 fixed-seed runs of 4 images, coverage s.e. 0.5%; exact per-image bound in
    closed form).
    bias 0.045: the last step holds ~20% of the KL steps (the trained DDPM's share); 0.35: ~94%, the proposal
    gives it p ≈ 0.9 and it becomes a take-all step (sampled, the interval covered 43%)."""
    from scipy.stats import t as student_t

    from elbo_lab.oracles.gaussian import GaussianData

    sch = NoiseSchedule.cosine(200)
    oracle = GaussianData.random(16, seed=0)
    x = oracle.sample(4, generator=torch.Generator().manual_seed(3))
    m = SpikyOracleEps(oracle, sch, bias=bias)
    base = oracle.optimal_eps(sch)
    probe = oracle.sample(3, generator=torch.Generator().manual_seed(9))
    for k in (0, 57, sch.T - 2):  # the affine read-off is the oracle's predictor
        kk = torch.full((3,), k)
        assert torch.allclose(m(probe, kk), base(probe, kk), atol=1e-10)
    terms = exact_terms(m, sch, x, "posterior")  # (N, T)
    exact = torch.from_numpy(terms.sum(1) + exact_prior(sch, x))
    share = terms[:, -1].sum() / terms[:, 1:].sum()
    assert share > 0.1, share  # the spike is real: > 10% of the KL steps
    kw = dict(decoder="gaussian", variance="posterior", chunk_size=8192)
    p = estimate_proposal(m, sch, x, generator=1, **kw)
    assert p[-1].item() > 0.5 * share and p[-30:-1].sum().item() < 0.02, (p[-1].item(), p[-30:-1].sum().item())
    reps = 2000
    r = variational_bound(
        m, sch, x.repeat(reps, 1), estimator="importance", num_samples=8, proposal=p, generator=43, **kw
    )
    assert r.take_all == ([sch.T - 1] if bias > 0.1 else [])
    assert r.n_evals == reps * 4 * (8 + 4 + 8 * len(r.take_all))  # a take-all step keeps its ⌈M p⌉ = 8 draws
    q = torch.from_numpy(student_t.ppf(0.975, r.dof.numpy()))
    covered = ((r.total - exact.repeat(reps)).abs() <= q * r.stderr).double().mean().item()
    assert 0.93 <= covered <= 0.97, covered


def test_importance_beats_uniform_variance(model, schedule, x0):
    kw = dict(decoder="gaussian", num_samples=8, generator=4)
    xr = x0[:1].repeat(200, 1)
    u = variational_bound(model, schedule, xr, estimator="uniform", **kw)
    i = variational_bound(model, schedule, xr, estimator="importance", **kw)
    assert i.total.std() < u.total.std()


def test_sampled_terms_and_counts(model, schedule, x0):
    r = variational_bound(model, schedule, x0, estimator="stratified", decoder="gaussian", num_samples=2 * (T - 1))
    # 2 draws in each of T − 1 strata of size 1 (k = 1..T−1) plus the exact decoder: no NaN columns
    assert not bool(r.terms.isnan().any()) and r.estimator == "stratified"
    r = variational_bound(model, schedule, x0, estimator="uniform", decoder="gaussian", num_samples=2)
    assert bool(r.terms[:, 1:].isnan().any()) and bool(torch.isfinite(r.total).all())
    assert bool(torch.isfinite(r.decoder).all())
    full = variational_bound(model, schedule, x0, decoder="gaussian", generator=0)
    same = variational_bound(model, schedule, x0, estimator="uniform", decoder="gaussian", generator=0)
    assert not torch.equal(full.decoder, same.decoder)  # independent ε, but the same term:
    assert bool(((full.decoder - same.decoder).abs() < 50).all())


# -- chunking, units, learned variance, L_simple -------------------------------------------------------------------


def test_full_is_chunked_with_bounded_batches(schedule, x0):
    m = AffineEps(schedule)
    r = variational_bound(m, schedule, x0, decoder="gaussian", chunk_size=7)
    assert max(m.batches) <= 7 and sum(m.batches) == 2 * x0.shape[0] * T == r.n_evals
    assert bool(torch.isfinite(r.terms).all())


def test_bits_per_dim(model, schedule, x0):
    r = variational_bound(model, schedule, x0, levels=LEVELS)
    b = variational_bound(model, schedule, x0, levels=LEVELS, bits_per_dim=True)
    assert b.units == "bits/dim" and r.units == "nats"
    torch.testing.assert_close(b.total, r.total / (DIM * math.log(2)), rtol=1e-14, atol=0)
    torch.testing.assert_close(r.bits_per_dim().terms, b.terms, rtol=1e-14, atol=0)
    assert isinstance(b, BoundResult) and b.dim == DIM


def test_discrete_data_bound_is_positive_and_decoder_a_probability(model, schedule, x0):
    r = variational_bound(model, schedule, x0, levels=LEVELS)
    assert bool((r.decoder > 0).all()) and bool((r.total > r.prior).all())


@pytest.mark.parametrize(("v", "variance"), [(0.0, "posterior"), (1.0, "beta")])
def test_learned_variance_endpoints(model, schedule, x0, v, variance):
    def learned(x, k):
        eps = model(x, k)
        return eps, torch.full_like(eps, v)

    a = variational_bound(learned, schedule, x0, levels=LEVELS, variance="learned", generator=9)
    b = variational_bound(model, schedule, x0, levels=LEVELS, variance=variance, generator=9)
    torch.testing.assert_close(a.terms, b.terms, rtol=1e-10, atol=1e-12)


def test_variance_callable_matches_named(model, schedule, x0):
    a = variational_bound(model, schedule, x0, levels=LEVELS, variance=lambda k: schedule.betas[k], generator=9)
    b = variational_bound(model, schedule, x0, levels=LEVELS, variance="beta", generator=9)
    torch.testing.assert_close(a.terms, b.terms, rtol=1e-12, atol=1e-12)


def test_l_simple_expectation(model, schedule, x0):
    n = 4000
    xr = x0[:1].repeat(n, 1)
    loss = l_simple(model, schedule, xr, generator=3)
    assert loss.shape == (n,)
    a, sd = schedule.alpha_bars.sqrt().numpy(), schedule.one_minus_alpha_bars.sqrt().numpy()
    M, c, x = model.M.numpy(), model.c.numpy(), x0[:1].numpy()[0]
    mse = [((np.eye(DIM) - sd[k] * M[k]) ** 2).sum() + ((a[k] * M[k] @ x + c[k]) ** 2).sum() for k in range(T)]
    exact = np.mean(mse) / DIM
    assert abs(loss.mean().item() - exact) < 4 * loss.std().item() / math.sqrt(n)


# -- the discretized decoder ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("var", [1e-12, 1e-6, 0.01, 0.3, 4.0])
@pytest.mark.parametrize("mean", [-1.3, -0.4, 0.0, 0.77, 2.5])
def test_discretized_decoder_sums_to_one_and_matches_scipy(mean, var):
    K = LEVELS
    levels = torch.linspace(-1, 1, K, dtype=F64)
    logp = discretized_gaussian_log_likelihood(levels, torch.tensor(mean, dtype=F64), var, K)
    assert bool(torch.isfinite(logp).all()) or var < 1e-6  # far-away bins may underflow to -inf at tiny var
    assert abs(torch.logsumexp(logp, 0).item()) < 1e-12
    edges = np.concatenate([[-np.inf], (levels[:-1].numpy() + levels[1:].numpy()) / 2, [np.inf]])
    probs = np.diff(norm.cdf(edges, loc=mean, scale=math.sqrt(var)))
    big = probs > 1e-300
    np.testing.assert_allclose(np.exp(logp.numpy())[big], probs[big], rtol=1e-9, atol=1e-15)


def test_discretized_decoder_stable_at_tiny_variance():
    # mean inside a bin, variance 1e-30: that bin has probability 1 (log p = 0), neighbours finite but tiny
    x = torch.tensor([0.0, 0.125, -1.0, 1.0], dtype=F64)
    logp = discretized_gaussian_log_likelihood(x, torch.tensor([0.01, 0.01, -1.2, 1.3], dtype=F64), 1e-30, LEVELS)
    assert logp[0].item() == 0.0 and logp[2].item() == 0.0 and logp[3].item() == 0.0
    assert logp[1].item() < -1e20 and not math.isnan(logp[1].item())


# -- the model being bounded (ModelSpec) ---------------------------------------------------------------------------


def test_model_spec_equals_keywords_and_travels_with_the_result(model, schedule, x0):
    spec = ModelSpec(variance="beta", decoder="discretized", levels=LEVELS)
    a = variational_bound(model, schedule, x0, model=spec, generator=3)
    b = variational_bound(model, schedule, x0, variance="beta", levels=LEVELS, generator=3)
    assert torch.equal(a.total, b.total) and a.model == spec and b.model == spec
    assert a.bits_per_dim().model == spec and a.seed == 3
    assert ModelSpec.from_dict(spec.to_dict()) == spec
    assert "beta variance" in spec.describe() and f"{LEVELS} levels" in spec.describe()
    ckpt = {"config": {"variance": "posterior"}, "data": {"levels": 17}}
    assert ModelSpec.from_ddpm_checkpoint(ckpt) == ModelSpec(
        variance="posterior", decoder="discretized", levels=17, source="elbo-lab DDPM checkpoint"
    )


def test_model_spec_rejects_bad_fields_and_mixing(model, schedule, x0):
    for kw, match in [
        (dict(variance="small", levels=3), "variance"),
        (dict(decoder="bernoulli"), "decoder"),
        (dict(levels=1), "levels"),
        (dict(levels=3, prediction="x0"), "prediction"),
    ]:
        with pytest.raises(ValueError, match=match):
            ModelSpec(**kw)
    with pytest.raises(ValueError, match="not both"):
        variational_bound(model, schedule, x0, model=ModelSpec(levels=LEVELS), variance="beta")
    with pytest.raises(ValueError, match="unknown model-spec fields"):
        ModelSpec.from_dict({"variance": "beta", "levels": 3, "clip": True})


def test_prediction_types_bound_the_same_model(model, schedule, x0):
    """An x̂_0-model and a v-model built from the ε-model by the definitions x_t = √ᾱ x_0 + √(1−ᾱ) ε and
    v = √ᾱ ε − √(1−ᾱ) x_0 (written here independently) are the same p_θ: the same bound, term by term."""
    a, sd = schedule.alpha_bars.sqrt(), schedule.one_minus_alpha_bars.sqrt()

    def x0_model(x, k):
        return (x - sd[k, None] * model(x, k)) / a[k, None]

    def v_model(x, k):
        return a[k, None] * model(x, k) - sd[k, None] * x0_model(x, k)

    ref = variational_bound(model, schedule, x0, model=ModelSpec(levels=LEVELS), generator=5)
    for fn, pred in [(x0_model, "sample"), (v_model, "v")]:
        r = variational_bound(fn, schedule, x0, model=ModelSpec(levels=LEVELS, prediction=pred), generator=5)
        torch.testing.assert_close(r.terms, ref.terms, rtol=1e-9, atol=1e-10)
        t = trajectory_bound(fn, schedule, x0, model=ModelSpec(levels=LEVELS, prediction=pred), generator=6)
        torch.testing.assert_close(
            t, trajectory_bound(model, schedule, x0, levels=LEVELS, generator=6), rtol=1e-9, atol=1e-9
        )


# -- conventions by name: FIXED_LARGE and clip_denoised --------------------------------------------------------


def test_fixed_large_is_the_reference_variance(model, schedule, x0):
    """improved-diffusion FIXED_LARGE: σ_t² = β_t for t ≥ 2 and σ_1² = β̃_2 (E6 ``variance`` at t = 2, SymPy).
    The named convention equals a callable built from that definition; it differs from "beta" only in L_0."""
    b = schedule.betas
    bt2 = reference("posterior", "variance", beta=b[1].item(), alpha_bar_prev=schedule.alpha_bars[0].item())
    want = torch.cat([torch.tensor([float(bt2)], dtype=F64), b[1:]])
    torch.testing.assert_close(D.reverse_variance(schedule, None, "fixed_large"), want, rtol=1e-12, atol=0)
    kw = dict(levels=LEVELS, generator=9)
    named = variational_bound(model, schedule, x0, variance="fixed_large", **kw)
    by_def = variational_bound(model, schedule, x0, variance=lambda k: want[k], **kw)
    beta = variational_bound(model, schedule, x0, variance="beta", **kw)
    torch.testing.assert_close(named.terms, by_def.terms, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(named.terms[:, 1:], beta.terms[:, 1:], rtol=0, atol=0)
    assert bool((named.terms[:, 0] != beta.terms[:, 0]).all())  # the decoder is where they differ
    eps = variational_bound(model, schedule, x0, variance="fixed_large", form="eps", **kw)
    torch.testing.assert_close(eps.terms, named.terms, rtol=1e-9, atol=1e-12)


class FarEps(AffineEps):
    """An affine ε-model whose x̂_0 leaves [−1, 1] often (so clipping matters)."""

    def __init__(self, schedule):
        super().__init__(schedule, delta=1.5, seed=3)


def test_clip_denoised_term_vs_sympy(schedule, x0):
    """The reference's clip_denoised, recomputed independently: x̂_0 from E6 ``x0_from_eps`` (SymPy), clipped with
    numpy, the posterior mean E6 ``mean`` at the clipped x̂_0, the KL E8 ``kl``; at t = 1 the discretized decoder
    with mean clip(x̂_0) from scipy's normal CDF."""
    m = FarEps(schedule)
    spec = ModelSpec(variance="fixed_large", levels=LEVELS, clip_denoised=True)
    noise = torch.randn((3, DIM), generator=torch.Generator().manual_seed(2), dtype=F64)
    for kk in (4, 12):
        k = torch.full((3,), kk)
        got = bound_term(m, schedule, x0, k, noise, model=spec)
        xt = D.q_sample(schedule, x0, k, noise)
        beta, abp = schedule.betas[kk].item(), schedule.alpha_bars_prev[kk].item()
        x0_hat = reference(
            "posterior", "x0_from_eps", xt=xt.numpy(), eps=m(xt, k).numpy(), beta=beta, alpha_bar_prev=abp
        )
        assert np.any(np.abs(x0_hat) > 1)  # the test has teeth: something is clipped
        mu_p = reference("posterior", "mean", x0=np.clip(x0_hat, -1, 1), xt=xt.numpy(), beta=beta, alpha_bar_prev=abp)
        mu_q = reference("posterior", "mean", x0=x0.numpy(), xt=xt.numpy(), beta=beta, alpha_bar_prev=abp)
        var_q = reference("posterior", "variance", beta=beta, alpha_bar_prev=abp)
        want = reference("mean_matching", "kl", mu_q=mu_q, var_q=var_q, mu_p=mu_p, var_p=beta).sum(1)
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-10)
        unclipped = bound_term(m, schedule, x0, k, noise, model=ModelSpec(variance="fixed_large", levels=LEVELS))
        assert not torch.allclose(got, unclipped)
    # t = 1: decoder N(clip(x̂_0), σ_1² = β̃_2) discretized on the K levels (ε̂ scaled up so x̂_0 leaves [−1, 1])
    k = torch.zeros(3, dtype=torch.long)

    def m0(x, kk):
        return 20 * m(x, kk)

    got = bound_term(m0, schedule, x0, k, noise, model=spec)
    xt = D.q_sample(schedule, x0, k, noise)
    sd, a = schedule.one_minus_alpha_bars[0].sqrt().item(), schedule.alpha_bars[0].sqrt().item()
    raw = (xt.numpy() - sd * m0(xt, k).numpy()) / a
    mean = np.clip(raw, -1, 1)
    assert np.any(np.abs(raw) > 1) and np.any(np.abs(raw) < 1)
    scale = math.sqrt(D.reverse_variance(schedule, 0, "fixed_large").item())
    lo = np.where(x0.numpy() <= -1, -np.inf, x0.numpy() - 1 / (LEVELS - 1))
    hi = np.where(x0.numpy() >= 1, np.inf, x0.numpy() + 1 / (LEVELS - 1))
    a_, b_ = (lo - mean) / scale, (hi - mean) / scale
    flip = (a_ + b_) / 2 > 0  # Φ(b) − Φ(a) = Φ(−a) − Φ(−b): evaluate in the lower tail, in logs (no underflow)
    lo_, hi_ = np.where(flip, -b_, a_), np.where(flip, -a_, b_)
    want = -(log_ndtr(hi_) + np.log1p(-np.exp(log_ndtr(lo_) - log_ndtr(hi_)))).sum(1)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-9)


def test_clip_denoised_whole_bound_routes_agree(schedule, x0):
    """With clipping, the KL form, the ε form and the trajectory route bound the same (clipped) model."""
    m = FarEps(schedule)
    spec = ModelSpec(variance="posterior", decoder="gaussian", clip_denoised=True)
    kl = variational_bound(m, schedule, x0, model=spec, generator=4)
    eps = variational_bound(m, schedule, x0, model=spec, generator=4, form="eps")
    torch.testing.assert_close(eps.terms, kl.terms, rtol=1e-9, atol=1e-10)
    R = 3000
    full = variational_bound(m, schedule, x0[:1].repeat(R, 1), model=spec, generator=5, chunk_size=8192)
    traj = trajectory_bound(m, schedule, x0[:1].repeat(R, 1), model=spec, generator=6)
    se = math.hypot(full.mean_stderr(), traj.std().item() / math.sqrt(R))
    assert abs(full.mean() - traj.mean().item()) < 4 * se
    plain = variational_bound(m, schedule, x0[:1].repeat(R, 1), model=ModelSpec("posterior", "gaussian"), generator=5)
    assert abs(plain.mean() - full.mean()) > 8 * math.hypot(plain.mean_stderr(), full.mean_stderr())


# -- the CLI reproduces the library, convention by convention -------------------------------------------------


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    """A tiny DDPM (fixed β variance, ε output, T = 20) trained for a few steps: seconds on one core."""
    from elbo_lab.ddpm import TrainConfig, train

    out = tmp_path_factory.mktemp("ddpm_bound")
    cfg = TrainConfig(
        steps=20,
        T=20,
        base_channels=8,
        batch_size=16,
        eval_every=20,
        log_every=10,
        val_samples=4,
        device="cpu",
        variance="beta",
        param="eps",
        loss="simple",
    )
    train(cfg, out, progress=False, log=lambda *a: None)
    return out / "last.pt"


@pytest.mark.parametrize(("variance", "clip"), [(None, False), ("fixed_large", True), ("posterior", False)])
def test_cli_bound_names_and_reproduces_the_convention(tiny_ckpt, tmp_path, capsys, variance, clip):
    """``elbo-lab bound --variance V [--clip-denoised]`` = a direct variational_bound call with that ModelSpec."""
    import json

    from elbo_lab.cli import main as cli
    from elbo_lab.data import load_digits
    from elbo_lab.ddpm import load_model

    out = tmp_path / "b.json"
    argv = ["bound", str(tiny_ckpt), "--estimator", "full", "--n", "3", "--device", "cpu", "--json", str(out)]
    argv += (["--variance", variance] if variance else []) + (["--clip-denoised"] if clip else [])
    assert cli(argv) == 0
    printed, r = capsys.readouterr().out, json.loads(out.read_text())
    spec = ModelSpec(variance=variance or "beta", levels=17, clip_denoised=clip, source="elbo-lab DDPM checkpoint")
    assert r["model"] == spec.to_dict() and spec.describe() in printed
    m, _ = load_model(tiny_ckpt, "cpu")
    x = load_digits().test[:3].to(F64)
    want = variational_bound(m, m.schedule, x, model=spec, generator=0, model_dtype=F64, bits_per_dim=True)
    assert r["total"] == pytest.approx(want.mean(), rel=1e-12)


# -- the number to cite -------------------------------------------------------------------------------------------


def test_citation_line_and_fields(model, schedule):
    """The quotable line and the dict carry the same numbers; the CI is mean ± t_ν·s.e. with ν recomputed here
    from the Welch–Satterthwaite formula (scipy's t quantile), in bits/dim."""
    from scipy.stats import t as student_t

    from elbo_lab.cite import citation, citation_line

    g = torch.Generator().manual_seed(4)
    x = torch.randint(0, LEVELS, (5, DIM), generator=g).to(F64) * 2 / (LEVELS - 1) - 1
    r = variational_bound(model, schedule, x, estimator="importance", num_samples=6, levels=LEVELS, generator=2)
    b = r.bits_per_dim()
    se = float(b.stderr.pow(2).sum().sqrt() / 5)
    nu = float(b.stderr.pow(2).sum() ** 2 / (b.stderr.pow(4) / b.dof).sum())
    q = student_t.ppf(0.975, nu)
    c = citation(r, version="9.9", commit="abc")
    assert c["value"] == pytest.approx(b.mean(), rel=1e-12) and c["stderr"] == pytest.approx(se, rel=1e-12)
    assert c["ci95"] == pytest.approx([b.mean() - q * se, b.mean() + q * se], rel=1e-9)
    assert c["dof"] == pytest.approx(nu, rel=1e-9) and c["units"] == "bits/dim"
    assert (c["estimator"], c["num_samples"], c["n_images"], c["n_evals"], c["T"]) == ("importance", 6, 5, r.n_evals, T)
    assert c["model"] == r.model.to_dict() and (c["version"], c["git_commit"]) == ("9.9", "abc")
    line = citation_line(r)
    assert line == c["line"] and line.startswith(f"NLL ≤ {b.mean():.5f} ± {se:.5f} bits/dim (1 s.e.; 95% CI [")
    assert f"[{c['ci95'][0]:.5f}, {c['ci95'][1]:.5f}]" in line and f"{r.n_evals:,} network evaluations" in line
    assert f"T = {T}" in line and "posterior variance" in line and "5 images" in line
    one = variational_bound(model, schedule, x, levels=LEVELS, eps_draws=1)
    assert "not estimated" in citation_line(one) and citation(one)["stderr"] is None


def test_cli_bound_ends_with_the_citation_line(tiny_ckpt, tmp_path, capsys):
    import json

    from elbo_lab import __version__
    from elbo_lab.cli import main as cli

    out = tmp_path / "c.json"
    argv = ["bound", str(tiny_ckpt), "--n", "4", "--budget", "6", "--device", "cpu", "--quiet", "--json", str(out)]
    assert cli(argv) == 0
    captured = capsys.readouterr()
    r = json.loads(out.read_text())
    assert captured.out.rstrip().splitlines()[-1] == r["citation"]["line"]
    assert r["citation"]["value"] == pytest.approx(r["total"], rel=1e-12)
    assert r["citation"]["stderr"] == pytest.approx(r["stderr_estimator"], rel=1e-12)
    assert r["version"] == __version__ and r["citation"]["git_commit"] == r["git_commit"]
    assert "it/s" not in captured.err and "eval/s" not in captured.err  # no bar off a terminal
    # a group of steps no image drew has no estimate: null in the JSON and "—" in the table, never 0 ± 0
    undrawn = [g for g in r["groups"] if g["steps_drawn"] == 0]
    assert undrawn, "4 images x 6 steps leave some groups undrawn"
    assert all(g["bits_per_dim"] is None and g["stderr"] is None for g in undrawn)
    label = {g["t_from"]: g for g in undrawn}
    lines = [ln for ln in captured.out.splitlines() if "not drawn by any image" in ln]
    assert len(lines) == len(undrawn) and all("—" in ln and "0.00000" not in ln for ln in lines), lines
    assert all(g["bits_per_dim"] is not None for g in r["groups"] if g["t_from"] not in label)


def test_progress_bar_on_a_terminal_only(model, schedule, x0, monkeypatch, capsys):
    """The bar (tqdm, ETA) is drawn when stderr is a terminal and progress=True; never otherwise."""
    import sys

    variational_bound(model, schedule, x0, levels=LEVELS, progress=True)
    assert "eval" not in capsys.readouterr().err  # pytest's stderr is not a terminal
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    variational_bound(model, schedule, x0, levels=LEVELS, progress=True, chunk_size=16)
    err = capsys.readouterr().err
    assert "bound (full)" in err and "eval" in err
    variational_bound(model, schedule, x0, levels=LEVELS, progress=False)
    assert capsys.readouterr().err == ""


# -- noise keyed by (image, step, draw) ----------------------------------------------------------------------------


def test_noise_seeds_are_a_function_of_the_key_only():
    ids, ks, ds = np.meshgrid(np.arange(50), np.arange(40), np.arange(3), indexing="ij")
    seeds = noise_seeds(7, 1, ids.ravel(), ks.ravel(), ds.ravel())
    assert len(np.unique(seeds)) == seeds.size  # 6000 keys, 6000 distinct seeds
    assert np.array_equal(seeds[:10], noise_seeds(7, 1, ids.ravel()[:10], ks.ravel()[:10], ds.ravel()[:10]))
    assert not np.array_equal(seeds, noise_seeds(8, 1, ids.ravel(), ks.ravel(), ds.ravel()))
    assert not np.array_equal(seeds, noise_seeds(7, 2, ids.ravel(), ks.ravel(), ds.ravel()))
    e = keyed_noise(7, 1, [3, 4, 3], [5, 5, 5], [0, 0, 0], (DIM,))
    assert torch.equal(e[0], e[2]) and not torch.equal(e[0], e[1])
    big = keyed_noise(7, 1, np.arange(2000), np.zeros(2000), np.zeros(2000), (DIM,))
    assert abs(big.mean().item()) < 4 / math.sqrt(big.numel()) and abs(big.var().item() - 1) < 0.05


@pytest.mark.parametrize("estimator", ["full", "uniform", "stratified", "importance"])
def test_result_per_image_does_not_depend_on_batch_or_shard(model, schedule, estimator):
    """Noise keyed by (image id, step, draw): an image scored alone, in another order, in another shard or with
    another chunk size gets bit-identical terms (what sharding ``bound`` across ranks relies on)."""
    g = torch.Generator().manual_seed(4)
    x = torch.randint(0, LEVELS, (6, DIM), generator=g).to(F64) * 2 / (LEVELS - 1) - 1
    kw = dict(estimator=estimator, levels=LEVELS, generator=13, num_samples=6, pilot_images=6)
    if estimator == "importance":
        kw["proposal"] = estimate_proposal(model, schedule, x, levels=LEVELS, generator=13)
    whole = variational_bound(model, schedule, x, chunk_size=5, **kw)
    perm = torch.tensor([4, 1, 5, 0])
    shard = variational_bound(model, schedule, x[perm], image_ids=perm, chunk_size=3, **kw)
    torch.testing.assert_close(shard.total, whole.total[perm], rtol=0, atol=0)
    torch.testing.assert_close(shard.stderr, whole.stderr[perm], rtol=0, atol=0)
    other = variational_bound(model, schedule, x[perm], chunk_size=3, **kw)  # ids 0..3: different noise
    assert not torch.equal(other.total, whole.total[perm])


def test_bad_image_ids_raise(schedule, x0):
    _bad(schedule, x0, "image_ids", levels=LEVELS, image_ids=[0, 1])
    _bad(schedule, x0, "distinct", levels=LEVELS, image_ids=[0, 1, 1])


# -- bad input -----------------------------------------------------------------------------------------------------


def _bad(schedule, x, match, model=None, **kw):
    m = model or AffineEps(schedule)
    with pytest.raises(ValueError, match=match):
        variational_bound(m, schedule, x, **kw)


def test_bad_data_raises(schedule, x0):
    _bad(schedule, x0 * 1.5, r"outside \[-1, 1\]", levels=LEVELS)
    _bad(schedule, x0 * 0.98, "off the grid", levels=LEVELS)
    _bad(schedule, x0, "levels", levels=None)
    _bad(schedule, torch.full((2, DIM), float("nan"), dtype=F64), "NaN", decoder="gaussian")
    _bad(schedule, torch.zeros(DIM, dtype=F64), r"shape \(N, \.\.\.\)", decoder="gaussian")
    _bad(schedule, torch.zeros(2, DIM, dtype=torch.long), "floating-point", decoder="gaussian")


def test_bad_model_output_raises(schedule, x0):
    _bad(schedule, x0, "NaN or Inf", model=lambda x, k: x * float("nan"), levels=LEVELS)
    _bad(schedule, x0, "NaN or Inf", model=lambda x, k: x / 0.0, levels=LEVELS)
    _bad(schedule, x0, "shape mismatch", model=lambda x, k: x[:, :2], levels=LEVELS)
    _bad(schedule, x0, "shape mismatch", model=lambda x, k: x[:-1], levels=LEVELS)
    _bad(schedule, x0, "needs an eps_model that returns", levels=LEVELS, variance="learned")


def test_bad_options_raise(schedule, x0):
    _bad(schedule, x0, "estimator", levels=LEVELS, estimator="exact")
    _bad(schedule, x0, "num_samples", levels=LEVELS, estimator="uniform", num_samples=1)
    _bad(schedule, x0, "even", levels=LEVELS, estimator="stratified", num_samples=5)
    _bad(schedule, x0, "even", levels=LEVELS, estimator="importance", num_samples=5, stratified_importance=True)
    _bad(schedule, x0, "stratified_importance", levels=LEVELS, stratified_importance=True)  # estimator="full"
    _bad(schedule, x0, "decoder_draws", levels=LEVELS, estimator="uniform", decoder_draws=1)
    _bad(schedule, x0, "even", levels=LEVELS, estimator="stratified", num_samples=2 * T)
    _bad(NoiseSchedule.from_betas([0.1]), x0, "no steps to sample", levels=LEVELS, estimator="uniform")
    _bad(schedule, x0, "proposal", levels=LEVELS, estimator="importance", proposal=torch.ones(T - 1))
    _bad(schedule, x0, "> 0", levels=LEVELS, estimator="importance", proposal=torch.zeros(T))
    _bad(schedule, x0, "decoder", decoder="bernoulli")
    _bad(schedule, x0, "variance", levels=LEVELS, variance="small")
    _bad(schedule, x0, "form", levels=LEVELS, form="weights")
    _bad(schedule, x0, "chunk_size", levels=LEVELS, chunk_size=0)
    _bad(schedule, x0, "fixed variance", levels=LEVELS, form="eps", variance=lambda k: schedule.betas[k])


def test_timestep_out_of_range_raises(model, schedule, x0):
    with pytest.raises(ValueError, match="out of range"):
        bound_term(model, schedule, x0, torch.tensor([0, 1, T]), torch.zeros_like(x0), decoder="gaussian")


@pytest.mark.parametrize("estimator", ["stratified", "uniform"])
def test_citation_does_not_quote_an_undercovering_interval(model, schedule, estimator):
    """Stratified and uniform intervals were measured to undercover (bench_bound part (c)): the line to cite must
    not present them as a 95% CI, and the JSON says the interval is not trusted."""
    from elbo_lab.cite import COVERAGE_95, citation, citation_line

    g = torch.Generator().manual_seed(4)
    x = torch.randint(0, LEVELS, (5, DIM), generator=g).to(F64) * 2 / (LEVELS - 1) - 1
    r = variational_bound(model, schedule, x, estimator=estimator, num_samples=6, levels=LEVELS, generator=2)
    line, c = citation_line(r), citation(r)
    assert "95% CI [" not in line and "too small" in line and "cite importance or full" in line
    assert c["ci95_trusted"] is False and c["ci95_coverage_measured"] == list(COVERAGE_95[estimator])
    assert c["ci95"] is None  # no interval in the JSON either
    trusted = variational_bound(model, schedule, x, estimator="importance", num_samples=6, levels=LEVELS, generator=2)
    assert "95% CI [" in citation_line(trusted) and citation(trusted)["ci95_trusted"] is True


def test_quoted_coverage_is_the_measured_table():
    """``elbo_lab.cite.COVERAGE_95`` (shown in the citation JSON and the convergence figure's labels) and the
    coverage quoted in the guide are the min/max of the committed benchmark table (bench_bound.py part (c))."""
    from pathlib import Path

    from elbo_lab.cite import COVERAGE_95

    root = Path(__file__).resolve().parents[1]
    rows = [ln.split() for ln in (root / "benchmarks/results/bound_coverage.txt").read_text().splitlines()]
    rows = [r for r in rows if len(r) >= 11 and r[0] in ("oracle", "ddpm", "ddpm-lv")]
    name = {"importance": "importance", "importance-strat": "importance (stratified)"}
    seen: dict[str, list[tuple[float, float]]] = {}
    for r in rows:  # model estimator M reps cov/img cov/mean ...
        seen.setdefault(name.get(r[1], r[1]), []).append((float(r[4]), float(r[5])))
    assert set(seen) == {k for k, v in COVERAGE_95.items() if v is not None}
    assert all(len(v) >= 6 for v in seen.values())  # >= 2 models x M = 8, 32, 128
    for est, cov in seen.items():
        means = [m for _, m in cov]
        assert COVERAGE_95[est] == (min(means), max(means)), est
    imp = [c for pair in seen["importance"] for c in pair]  # per image and for the mean
    low = [c for e in ("uniform", "stratified") for pair in seen[e] for c in pair]
    guide = (root / "docs/guide/08-beyond.md").read_text()
    assert f"covered {min(low):.0%}–{max(low):.0%}".replace("%–", "–") in guide
    assert f"importance sampling's {100 * min(imp):.1f}–{100 * max(imp):.1f}%" in guide

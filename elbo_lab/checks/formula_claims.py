"""Claims for every formula family a user relies on that the other claim modules leave out (issue 14).

Each claim compares the engine with an answer computed another way -- mpmath at 40–60 digits, scipy.stats,
torch.distributions, a lambdified SymPy result, an independent numpy re-statement of a published formula, or the
Gaussian oracle's exact law -- and says in its statement what it runs on.  Families: the discretized decoder
(bin width 2/(K−1), outer bins to ±∞, the far-tail branch), the schedules (cosine offset and clip, linear
1000/T scaling, derived ᾱ, β̃, SNR), bits/dim's ln 2, the prior term L_T (index T and direction KL(q ‖ p)), the
learned-variance interpolation, the categorical head, the sampling step and the sampler's output law, every
standard error (per image for each estimator, with L_0 dominating and with the steps dominating; over images;
over the estimator) and the training losses (value and gradient flow).  All claims together take a few seconds
of CPU; Monte Carlo claims use fixed seeds and |Δ| < 4 standard errors.

Units: nats unless a claim says bits/dim.  Time convention: code index k = 0..T−1 is the paper's step t = k + 1.
Mutation testing: ``benchmarks/mutation.py`` (every seeded bug of its catalogue must fail at least one claim here
or elsewhere in ``elbo-lab verify``).
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import torch

from .registry import ClaimResult, claim, within_relative

F64 = torch.float64


def _z_claim(z: float, expected: str, observed: str, detail: str, values: dict | None = None) -> ClaimResult:
    return ClaimResult(expected, observed, "|z| < 4", abs(z) < 4, detail, {"z": z, **(values or {})})


def _mp_schedule(betas: np.ndarray, dps: int = 40) -> dict[str, np.ndarray]:
    """ᾱ_t, 1 − ᾱ_t, ᾱ_{t−1}, β̃_t, SNR_t from β in mpmath at ``dps`` digits, rounded to float64 at the end."""
    import mpmath as mp

    with mp.workdps(dps):
        ab, out = mp.mpf(1), {k: [] for k in ("alpha_bars", "one_minus", "prev", "post", "snr")}
        for b in betas:
            b = mp.mpf(float(b))
            prev, ab = ab, ab * (1 - b)
            out["prev"].append(prev)
            out["alpha_bars"].append(ab)
            out["one_minus"].append(1 - ab)
            out["post"].append(b * (1 - prev) / (1 - ab))
            out["snr"].append(ab / (1 - ab))
        return {k: np.array([float(v) for v in vals]) for k, vals in out.items()}


# ------------------------------------------------------------------------------------------ the decoder


def _mp_bin_log_mass(x: float, mean: float, std: float, K: int) -> float:
    """log P(bin of x) under N(mean, std²) with bins [x ∓ 1/(K−1)], outer bins to ±∞, in mpmath (60 digits)."""
    import mpmath as mp

    with mp.workdps(60):
        h = mp.mpf(1) / (K - 1)
        lo = -mp.inf if x <= -1 + 1e-9 else (mp.mpf(x) - h - mean) / std
        hi = mp.inf if x >= 1 - 1e-9 else (mp.mpf(x) + h - mean) / std
        if lo + hi > 0:  # above the mean: upper tails, so nothing cancels at 60 digits either way
            p = mp.ncdf(-lo) - mp.ncdf(-hi)
        else:
            p = mp.ncdf(hi) - mp.ncdf(lo)
        return float(mp.log(p))


@claim(
    "decoder.discretized.mpmath",
    equation="E7",
    statement="discretized decoder log P (nats) = mpmath bin masses: width 2/(K−1), ±∞ outer bins, far tails",
    numeric="elbo_lab.gaussian.discretized_gaussian_log_likelihood",
    estimator="exact (60-digit reference)",
)
def _decoder(seed: int) -> ClaimResult:
    from ..gaussian import discretized_gaussian_log_likelihood

    rng = np.random.default_rng(seed)
    rows = []  # (x, mean, std, K)
    for K in (2, 5, 17, 256):
        levels = -1 + 2 * np.arange(K) / (K - 1)
        x = np.concatenate([levels[[0, -1]], rng.choice(levels, 60)])
        mean = rng.uniform(-1.5, 1.5, x.size)
        std = np.exp(rng.uniform(np.log(1e-4), np.log(2.0), x.size))
        rows += list(zip(x, mean, std, [K] * x.size))
        # far tails: the bin lies many standard deviations above / below the mean (naive Φ differences give 0)
        rows += [(lv, -1.0, 0.02, K) for lv in levels[levels >= 0.0][:8]]
        rows += [(lv, 1.0, 0.02, K) for lv in levels[levels <= 0.0][:8]]
    x, mean, std, K = (np.array(c) for c in zip(*rows))
    obs = np.empty(len(rows))
    for k in np.unique(K):
        m = K == k
        obs[m] = discretized_gaussian_log_likelihood(
            torch.tensor(x[m]), torch.tensor(mean[m]), torch.tensor(std[m] ** 2), int(k)
        ).numpy()
    exp = np.array([_mp_bin_log_mass(*r) for r in rows])
    err = float(np.max(np.abs(obs - exp) / np.maximum(1.0, np.abs(exp)))) if np.all(np.isfinite(obs)) else math.inf
    # the K masses of one Gaussian sum to one
    worst_sum = 0.0
    for k in (2, 17, 256):
        lv = torch.linspace(-1, 1, k, dtype=F64)
        for mu, var in ((0.1, 0.3), (-0.97, 1e-5), (2.5, 0.01)):
            lp = discretized_gaussian_log_likelihood(lv, torch.full_like(lv, mu), torch.tensor(var, dtype=F64), k)
            worst_sum = max(worst_sum, abs(float(lp.exp().sum()) - 1.0))
    ok = err <= 1e-9 and worst_sum <= 1e-12
    return ClaimResult(
        "mpmath, 60 digits",
        f"max |Δ log P|/max(1, |log P|) {err:.1e}; |Σ P − 1| ≤ {worst_sum:.1e}",
        "≤ 1e-9; ≤ 1e-12",
        ok,
        f"{len(rows)} (level, mean, σ) points, K = 2, 5, 17, 256, incl. both outer bins and 32 far-tail bins per K",
        {"max_error": err, "max_sum_error": worst_sum},
    )


@claim(
    "gaussian.log_prob.scipy",
    equation="E1",
    statement="normal_log_prob (nats) = scipy.stats.norm.logpdf",
    derivation="gaussian_kl",
    numeric="elbo_lab.gaussian.normal_log_prob",
)
def _log_prob(seed: int) -> ClaimResult:
    from scipy import stats

    from ..gaussian import normal_log_prob

    rng = np.random.default_rng(seed)
    x, m = rng.normal(size=(2, 500)) * 3
    v = np.exp(rng.normal(size=500) * 2)
    obs = normal_log_prob(*(torch.tensor(a) for a in (x, m, v))).numpy()
    return within_relative(obs, stats.norm.logpdf(x, m, np.sqrt(v)), 1e-12, "scipy.stats", "500 random points")


# ------------------------------------------------------------------------------------------ schedules


@claim(
    "schedule.cosine.published",
    equation="E5",
    statement="cosine schedule = Nichol & Dhariwal eq. 17 (offset s = 0.008, β clipped at 0.999), numpy",
    numeric="elbo_lab.schedule.NoiseSchedule.cosine, elbo_lab.ddpm.model.make_schedule",
)
def _cosine(seed: int) -> ClaimResult:
    from ..ddpm.model import make_schedule
    from ..schedule import NoiseSchedule

    obs, exp, clipped = [], [], []
    for T, s in ((10, 0.008), (1000, 0.008), (100, 0.05)):
        u = np.arange(T + 1) / T
        f = np.cos((u + s) / (1 + s) * np.pi / 2) ** 2
        ref = np.minimum(1 - f[1:] / f[:-1], 0.999)
        obs += [NoiseSchedule.cosine(T, s=s).betas.numpy(), make_schedule("cosine", T, s=s).betas.numpy()]
        exp += [ref, ref]
        clipped.append(float(NoiseSchedule.cosine(T, s=s).betas[-1]))
    out = within_relative(np.concatenate(obs), np.concatenate(exp), 1e-12, "numpy (published formula)", "")
    ok_clip = all(c == 0.999 for c in clipped)
    out.passed = out.passed and ok_clip
    out.detail = f"T = 10, 1000 (s = 0.008), T = 100 (s = 0.05); last β = {clipped} (the clip, exactly 0.999)"
    return out


@claim(
    "schedule.linear.published",
    equation="E5",
    statement="linear schedule = DDPM's linspace(1e-4, 0.02, T), ×1000/T in the engine's config (numpy)",
    numeric="elbo_lab.schedule.NoiseSchedule.linear, elbo_lab.ddpm.model.make_schedule",
)
def _linear(seed: int) -> ClaimResult:
    from ..ddpm.model import make_schedule
    from ..schedule import NoiseSchedule

    obs = [NoiseSchedule.linear(1000).betas.numpy()]
    exp = [np.linspace(1e-4, 0.02, 1000)]
    for T in (50, 100, 4000):
        obs.append(make_schedule("linear", T).betas.numpy())
        exp.append(np.linspace(1e-4 * 1000 / T, 0.02 * 1000 / T, T))
    return within_relative(
        np.concatenate(obs), np.concatenate(exp), 1e-12, "numpy linspace", "T = 1000 unscaled; T = 50, 100, 4000 scaled"
    )


@claim(
    "schedule.derived.mpmath",
    equation="E6",
    statement="ᾱ_t, 1 − ᾱ_t, ᾱ_{t−1}, β̃_t, SNR_t and the clipped log β̃ = mpmath at 40 digits",
    derivation="posterior",
    numeric="elbo_lab.schedule.NoiseSchedule",
)
def _derived(seed: int) -> ClaimResult:
    from ..schedule import NoiseSchedule

    obs, exp = [], []
    for s in (NoiseSchedule.linear(1000), NoiseSchedule.cosine(1000), NoiseSchedule.linear(50, 1e-6, 1e-3)):
        ref = _mp_schedule(s.betas.numpy())
        obs += [s.alpha_bars, s.one_minus_alpha_bars, s.alpha_bars_prev, s.posterior_variance, s.snr]
        exp += [ref["alpha_bars"], ref["one_minus"], ref["prev"], ref["post"], ref["snr"]]
        clipped = np.log(np.concatenate([ref["post"][1:2], ref["post"][1:]]))
        obs.append(s.log_posterior_variance_clipped)
        exp.append(clipped)
    obs = np.concatenate([o.numpy() for o in obs])
    return within_relative(
        obs, np.concatenate(exp), 1e-11, "mpmath, 40 digits", "linear & cosine T = 1000, tiny-β linear T = 50"
    )


# ------------------------------------------------------------------------------------------ units, L_T, forward


@claim(
    "units.bits_per_dim",
    equation="-",
    statement="bits/dim = nats / (D ln 2): BoundResult, bits_per_dim=True, the oracle (numpy log2 e)",
    numeric="elbo_lab.bound.BoundResult.bits_per_dim, elbo_lab.oracles.gaussian.OracleBound.bits_per_dim",
)
def _bpd(seed: int) -> ClaimResult:
    from ..bound import variational_bound
    from ..oracles.gaussian import GaussianData
    from ..schedule import NoiseSchedule

    s, data = NoiseSchedule.cosine(10), GaussianData.random(3, seed=seed)
    x = data.sample(8, torch.Generator().manual_seed(seed))
    kw = dict(decoder="gaussian", generator=seed)
    nats = variational_bound(data.optimal_eps(s), s, x, **kw)
    bits = variational_bound(data.optimal_eps(s), s, x, bits_per_dim=True, **kw)
    conv = nats.bits_per_dim()
    factor = np.log2(np.e) / 3  # bits per nat, per dimension
    exp = nats.total.numpy() * factor
    ob = data.expected_bound(s)
    obs = [bits.total.numpy(), conv.total.numpy(), conv.stderr.numpy() / factor, [float(ob.bits_per_dim())]]
    obs = np.concatenate(obs)
    exp = np.concatenate([exp, exp, nats.stderr.numpy(), [float(ob.total) * factor]])
    out = within_relative(obs, exp, 1e-12, "numpy log2(e)/D", "8 oracle images, D = 3; totals, stderrs, oracle")
    out.passed = out.passed and bits.units == conv.units == "bits/dim" and nats.units == "nats"
    return out


@claim(
    "bound.prior_LT.torch_distributions",
    equation="E7",
    statement="L_T = KL(q(x_T|x_0) ‖ N(0, I)) at the last step t = T (nats), torch.distributions",
    derivation="gaussian_kl",
    numeric="elbo_lab.bound.prior_term",
)
def _prior(seed: int) -> ClaimResult:
    from torch.distributions import Normal, kl_divergence

    from ..bound import prior_term
    from ..schedule import NoiseSchedule

    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(16, 2, 4, generator=g, dtype=F64) * 2 - 1
    obs, exp = [], []
    for s in (NoiseSchedule.linear(50), NoiseSchedule.linear(200), NoiseSchedule.cosine(20)):
        ab_T = float(np.prod(1.0 - s.betas.numpy()))  # ᾱ_T, numpy
        q = Normal(math.sqrt(ab_T) * x0, math.sqrt(1 - ab_T))
        exp.append(kl_divergence(q, Normal(torch.zeros_like(x0), torch.ones_like(x0))).flatten(1).sum(1).numpy())
        obs.append(prior_term(s, x0).numpy())
    return within_relative(
        np.concatenate(obs), np.concatenate(exp), 1e-10, "torch.distributions", "16 images × 8 values, ᾱ_T ≈ 0.6…0"
    )


@claim(
    "E5.sample_and_inverses.sympy",
    equation="E5",
    statement="q_sample, predict_eps, predict_x0 = the lambdified E5/E6 results",
    derivation="forward_marginal",
    numeric="elbo_lab.diffusion.q_sample, predict_eps, predict_x0",
)
def _forward(seed: int) -> ClaimResult:
    from .. import diffusion as D
    from ..schedule import NoiseSchedule
    from ..symbolic import reference

    rng = np.random.default_rng(seed)
    obs, exp = [], []
    for s in (NoiseSchedule.linear(1000), NoiseSchedule.cosine(1000)):
        k = torch.as_tensor(rng.integers(0, s.T, 300))
        x0, eps, xt = (torch.as_tensor(rng.normal(size=300)) for _ in range(3))
        ab, b, abp = s.alpha_bars[k].numpy(), s.betas[k].numpy(), s.alpha_bars_prev[k].numpy()
        obs += [D.q_sample(s, x0, k, eps), D.predict_eps(s, xt, k, x0), D.predict_x0(s, xt, k, eps)]
        exp += [
            reference("forward_marginal", "sample", x0=x0.numpy(), eps=eps.numpy(), alpha_bar=ab),
            reference("forward_marginal", "eps_from_xt", xt=xt.numpy(), x0=x0.numpy(), alpha_bar=ab),
            reference("posterior", "x0_from_eps", xt=xt.numpy(), eps=eps.numpy(), beta=b, alpha_bar_prev=abp),
        ]
    obs = np.concatenate([o.numpy() for o in obs])
    return within_relative(obs, np.concatenate(exp), 1e-10, "SymPy (lambdified)", "linear, cosine T = 1000")


# ------------------------------------------------------------------------------------------ reverse process


@claim(
    "variance.learned.interpolation",
    equation="-",
    statement="learned σ² = exp(v log β_t + (1 − v) log β̃_t), β̃_1 := β̃_2; v = 0, 1 give β̃, β (numpy + SymPy β̃)",
    derivation="posterior",
    numeric="elbo_lab.diffusion.reverse_variance_from_v, reverse_variance",
)
def _learned(seed: int) -> ClaimResult:
    from .. import diffusion as D
    from ..schedule import NoiseSchedule
    from ..symbolic import reference

    rng = np.random.default_rng(seed)
    obs, exp = [], []
    for s in (NoiseSchedule.cosine(100), NoiseSchedule.linear(1000)):
        b = s.betas.numpy()
        post = reference("posterior", "variance", beta=b, alpha_bar_prev=np.cumprod(np.r_[1.0, 1 - b[:-1]]))
        post_clip = np.r_[post[1], post[1:]]
        k = torch.as_tensor(np.r_[0, 0, rng.integers(0, s.T, 198)])
        v = torch.as_tensor(np.r_[0.0, 1.0, rng.uniform(0, 1, 198)])
        kk = k.numpy()
        obs.append(D.reverse_variance_from_v(s, k, v).numpy())
        exp.append(np.exp(v.numpy() * np.log(b[kk]) + (1 - v.numpy()) * np.log(post_clip[kk])))
        obs += [D.reverse_variance_from_v(s, k, torch.zeros(200, dtype=F64)).numpy(), D.reverse_variance(s, k)]
        exp += [post_clip[kk], post_clip[kk]]
        obs += [D.reverse_variance_from_v(s, k, torch.ones(200, dtype=F64)).numpy(), D.reverse_variance(s, k, "beta")]
        exp += [b[kk], b[kk]]
    obs = np.concatenate([np.asarray(o) for o in obs])
    return within_relative(obs, np.concatenate(exp), 1e-11, "numpy, β̃ from SymPy", "cosine T = 100, linear T = 1000")


class _FixedLogits(torch.nn.Module):
    """A stand-in network that returns given logits (for the categorical head)."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits
        self.dummy = torch.nn.Parameter(torch.zeros((), dtype=F64))
        self.cfg = type("cfg", (), {"learned_variance": False})()

    def forward(self, x, k):
        return self.logits + 0 * self.dummy


@claim(
    "ddpm.categorical_head.bayes",
    equation="E5",
    statement="categorical head ε̂ = E[ε|x_t] under p(l|x_t) ∝ e^{f_l} N(x_t; √ᾱ l, 1−ᾱ) on K levels (scipy)",
    derivation="forward_marginal",
    numeric="elbo_lab.ddpm.model.EpsModel(param='categorical')",
)
def _categorical(seed: int) -> ClaimResult:
    from scipy import stats
    from scipy.special import softmax

    from ..ddpm.model import EpsModel
    from ..schedule import NoiseSchedule

    rng = np.random.default_rng(seed)
    B, C, K = 64, 3, 5
    s = NoiseSchedule.cosine(50)
    k = rng.integers(0, s.T, B)
    xt = rng.normal(size=(B, C)) * 1.2
    logits = rng.normal(size=(B, C, K)) * 2
    model = EpsModel(_FixedLogits(torch.tensor(logits.reshape(B, C * K))), s, param="categorical", levels=K)
    obs = model(torch.tensor(xt), torch.as_tensor(k)).detach().numpy()
    ab = np.cumprod(1 - s.betas.numpy())[k][:, None]  # ᾱ_t, numpy
    grid = -1 + 2 * np.arange(K) / (K - 1)
    loglik = stats.norm.logpdf(xt[:, :, None], np.sqrt(ab)[:, :, None] * grid, np.sqrt(1 - ab)[:, :, None])
    x0_hat = (softmax(logits + loglik, axis=2) * grid).sum(2)
    exp = (xt - np.sqrt(ab) * x0_hat) / np.sqrt(1 - ab)
    return within_relative(obs, exp, 1e-9, "scipy.stats + Bayes' rule", f"{B}×{C} values, K = {K}, cosine T = 50")


@claim(
    "sampling.step.sympy",
    equation="E11",
    statement="sampling step x_{t−1} = μ_θ + σ_t z (E11), no noise at t = 1, σ² = β̃ and β",
    derivation="sampling_step",
    numeric="elbo_lab.diffusion.p_sample_step",
)
def _step(seed: int) -> ClaimResult:
    from .. import diffusion as D
    from ..schedule import NoiseSchedule
    from ..symbolic import reference

    rng = np.random.default_rng(seed)
    obs, exp = [], []
    for s in (NoiseSchedule.linear(1000), NoiseSchedule.cosine(100)):
        for variance in ("posterior", "beta"):
            k = torch.as_tensor(rng.integers(1, s.T, 200))
            xt, eps, z = (torch.as_tensor(rng.normal(size=200)) for _ in range(3))
            kk = k.numpy()
            sig2 = (s.betas if variance == "beta" else s.posterior_variance).numpy()[kk]
            obs.append(D.p_sample_step(s, xt, k, eps, z, variance).numpy())
            exp.append(
                reference(
                    "sampling_step",
                    "step",
                    xt=xt.numpy(),
                    eps_hat=eps.numpy(),
                    z=z.numpy(),
                    beta=s.betas.numpy()[kk],
                    alpha_bar_prev=s.alpha_bars_prev.numpy()[kk],
                    sigma2=sig2,
                )
            )
            k0 = torch.zeros(200, dtype=torch.long)  # t = 1: the decoder mean, no noise
            obs.append(D.p_sample_step(s, xt, k0, eps, z, variance).numpy())
            exp.append(
                reference(
                    "sampling_step",
                    "mean",
                    xt=xt.numpy(),
                    eps_hat=eps.numpy(),
                    beta=s.betas.numpy()[0] + 0 * xt.numpy(),
                    alpha_bar_prev=1.0 + 0 * xt.numpy(),
                )
            )
    return within_relative(
        np.concatenate(obs), np.concatenate(exp), 1e-10, "SymPy (lambdified)", "t ≥ 2 and t = 1; linear, cosine"
    )


def _oracle_model(data, s, v_learned: float | None):
    eps = data.optimal_eps(s)

    class Model:
        schedule, device = s, torch.device("cpu")

        def __call__(self, xt, k):
            e = eps(xt, k)
            return (e, torch.full_like(e, v_learned)) if v_learned is not None else e

    return Model()


@claim(
    "sampling.sampler.oracle_law",
    equation="E11",
    statement="ancestral sampler on the Gaussian oracle's exact denoiser: output mean & covariance = exact law",
    numeric="elbo_lab.ddpm.sampling.ancestral_sample",
    estimator="Monte Carlo, 20k samples per variance",
)
def _sampler(seed: int) -> ClaimResult:
    from ..ddpm.sampling import ancestral_sample
    from ..oracles.gaussian import GaussianData
    from ..schedule import NoiseSchedule

    s, data, n, v = NoiseSchedule.cosine(10), GaussianData.random(2, seed=0), 20_000, 0.3
    chain = data.reverse_chain(s, "posterior")  # A_t, c_t: the exact linear-Gaussian reverse chain
    post = s.posterior_variance.clone()
    post[0] = post[1]
    sig2 = {"posterior": post, "beta": s.betas, "learned": torch.exp(v * s.betas.log() + (1 - v) * post.log())}
    P = torch.cumprod(chain.A, 0)
    P_prev = torch.cat([torch.ones(1, 2, dtype=F64), P[:-1]])
    U = data.eigvecs
    zmax = {}
    for variance, var in sig2.items():
        M = U @ (P_prev * chain.c).sum(0)
        C = (U * ((P_prev[1:] ** 2 * var[1:, None]).sum(0) + P[-1] ** 2)) @ U.T  # no noise at t = 1
        model = _oracle_model(data, s, v if variance == "learned" else None)
        g = torch.Generator().manual_seed(seed)
        x = ancestral_sample(model, (2,), n, variance=variance, generator=g, dtype=F64)
        d = x - M
        prod = d[:, :, None] * d[:, None, :]
        z = torch.cat(
            [d.mean(0) / (d.std(0) / math.sqrt(n)), ((prod.mean(0) - C) / (prod.std(0) / math.sqrt(n))).flatten()]
        )
        zmax[variance] = float(z.abs().max())
    worst = max(zmax.values())
    return ClaimResult(
        "exact N(M, V − σ_1² I) of the linear-Gaussian chain",
        ", ".join(f"{k} max|z| {v:.2f}" for k, v in zmax.items()),
        "|z| < 4 per entry",
        worst < 4,
        "D = 2, cosine T = 10; 2 mean + 4 covariance entries per variance (σ² = β̃, β, learned v = 0.3)",
        {"max_z": zmax},
    )


# ------------------------------------------------------------------------------------------ standard errors

_X_STAR = torch.tensor([0.3, -0.5, 0.8], dtype=F64)


def _point_model(s, c_steps: float):
    """ε̂ = c (x_t − √ᾱ x*)/√(1 − ᾱ) for t ≥ 2 and 0 at t = 1: L_0 is a scaled χ² and dominates the variance."""

    def eps_model(xt, k):
        ab, om = s.alpha_bars[k][:, None], s.one_minus_alpha_bars[k][:, None]
        c = torch.where(k == 0, 0.0, c_steps).to(F64)[:, None]
        return c * (xt - ab.sqrt() * _X_STAR) / om.sqrt()

    return eps_model


def _point_exact(s, c_steps: float) -> float:
    """E[bound] at x_0 = x* (nats): Σ_{t≥2} w_t (1 − c)² D + (D/2) log(2π σ_1²) + (β_1/α_1) D/(2σ_1²) + L_T."""
    from ..bound import prior_term

    D = _X_STAR.numel()
    b, a, om, pv = s.betas, s.alphas, s.one_minus_alpha_bars, s.posterior_variance
    w = b[1:] ** 2 / (2 * pv[1:] * a[1:] * om[1:])
    sig2 = float(pv[1])
    dec = 0.5 * D * math.log(2 * math.pi * sig2) + float(b[0] / a[0]) * D / (2 * sig2)
    return float(prior_term(s, _X_STAR[None])) + float(w.sum()) * (1 - c_steps) ** 2 * D + dec


def _variance_z(total: torch.Tensor, stderr: torch.Tensor, mu: float) -> tuple[float, float]:
    """(z of mean − μ, z of mean[(total − μ)² − stderr²]) over independent rows: both 0 in expectation."""
    n = total.numel()
    z_mean = float(total.mean() - mu) / (float(total.std()) / math.sqrt(n))
    d = (total - mu) ** 2 - stderr**2
    return z_mean, float(d.mean()) / (float(d.std()) / math.sqrt(n))


@claim(
    "stderr.per_image.decoder_dominated",
    equation="E7",
    statement="per-image stderr² unbiased for the estimate's variance when L_0 dominates (3 sampled estimators)",
    numeric="elbo_lab.bound.variational_bound(exact_decoder=True).stderr",
    estimator="4000 independent runs on one point, closed-form mean",
)
def _se_decoder(seed: int) -> ClaimResult:
    from ..bound import variational_bound
    from ..schedule import NoiseSchedule

    s, n = NoiseSchedule.cosine(10), 4000
    x = _X_STAR.repeat(n, 1)
    mu = _point_exact(s, 0.98)
    zs, shares = {}, {}
    for est in ("stratified", "uniform", "importance"):
        kw = dict(estimator=est, num_samples=8, decoder="gaussian", pilot_grid=None)
        r = variational_bound(_point_model(s, 0.98), s, x, generator=seed, **kw)
        zs[est] = _variance_z(r.total, r.stderr, mu)
        r0 = variational_bound(_point_model(s, 1.0), s, x, generator=seed + 1, **kw)  # steps exact: L_0 only
        shares[est] = float(r0.total.var() / r.total.var())
    worst = max(abs(z) for pair in zs.values() for z in pair)
    return ClaimResult(
        "E[(total − μ)² − stderr²] = 0, mean = μ",
        ", ".join(f"{e} z {a:+.2f}/{b:+.2f}" for e, (a, b) in zs.items()),
        "|z| < 4",
        worst < 4 and min(shares.values()) > 0.4,
        f"point model, D = 3, cosine T = 10, M = 8; L_0's share of the variance {min(shares.values()):.0%}…"
        f"{max(shares.values()):.0%} (nats²)",
        {"z": zs, "decoder_share": shares},
    )


@claim(
    "stderr.per_image.steps_dominated",
    equation="E7",
    statement="Gaussian oracle: per-image stderr² unbiased and mean = exact pointwise bound (4 sampled estimators)",
    numeric="elbo_lab.bound.variational_bound(...).stderr",
    estimator="2000 independent runs on one image",
)
def _se_steps(seed: int) -> ClaimResult:
    from ..bound import variational_bound
    from ..oracles.gaussian import GaussianData
    from ..schedule import NoiseSchedule

    s, data, n = NoiseSchedule.linear(100, 1e-3, 0.15), GaussianData.random(3, seed=1), 2000
    x1 = data.sample(1, torch.Generator().manual_seed(seed + 5))
    mu = float(data.pointwise_bound(s, "posterior", x1).total)
    zs = {}
    # importance: i.i.d. draws with weights 1/p_k; and stratified importance (stratified_importance=True)
    for est, M, extra in (
        ("stratified", 16, {}),
        ("uniform", 16, {}),
        ("importance", 16, {}),
        ("importance", 16, {"stratified_importance": True}),
    ):
        r = variational_bound(
            data.optimal_eps(s),
            s,
            x1.repeat(n, 1),
            estimator=est,
            num_samples=M,
            decoder="gaussian",
            generator=seed,
            **extra,
        )
        zs[f"{est}{' (stratified)' if extra else ''} M={M}"] = _variance_z(r.total, r.stderr, mu)
    worst = max(abs(z) for pair in zs.values() for z in pair)
    return ClaimResult(
        "E[(total − μ)² − stderr²] = 0, mean = μ (oracle)",
        ", ".join(f"{e} z {a:+.2f}/{b:+.2f}" for e, (a, b) in zs.items()),
        "|z| < 4",
        worst < 4,
        "D = 3, linear T = 100, M = 16 steps/image, σ² = β̃, Gaussian decoder (nats)",
        {"z": zs},
    )


@claim(
    "stderr.dataset_mean",
    equation="E7",
    statement="Gaussian oracle: mean_stderr('images') and ('estimator') match the spread of the dataset mean",
    numeric="elbo_lab.bound.BoundResult.mean_stderr",
    estimator="400 replicate datasets of 20 images",
)
def _se_mean(seed: int) -> ClaimResult:
    from ..bound import variational_bound
    from ..oracles.gaussian import GaussianData
    from ..schedule import NoiseSchedule

    s, data = NoiseSchedule.cosine(10), GaussianData.random(3, seed=2)
    R, n = 400, 20
    eps = data.optimal_eps(s)
    kw = dict(estimator="stratified", num_samples=8, decoder="gaussian")
    # over images: fresh images per replicate; exact E = the closed-form expected bound
    x = data.sample(R * n, torch.Generator().manual_seed(seed + 7))
    r = variational_bound(eps, s, x, generator=seed, **kw)
    E = float(data.expected_bound(s).total)
    means, ses = [], []
    for i in range(R):
        sub = replace(r, total=r.total[i * n : (i + 1) * n], stderr=r.stderr[i * n : (i + 1) * n])
        means.append(sub.mean())
        ses.append(sub.mean_stderr("images"))
    z_img = _variance_z(torch.tensor(means), torch.tensor(ses), E)
    cover = float(np.mean(np.abs(np.array(means) - E) < 1.96 * np.array(ses)))
    # over the estimator: the same n images in every replicate; exact E = mean of the oracle's pointwise bounds
    xs = x[:n].repeat(R, 1)
    r2 = variational_bound(eps, s, xs, generator=seed + 1, **kw)
    E2 = float(data.pointwise_bound(s, "posterior", x[:n]).total.mean())
    means2, ses2 = [], []
    for i in range(R):
        sub = replace(r2, total=r2.total[i * n : (i + 1) * n], stderr=r2.stderr[i * n : (i + 1) * n])
        means2.append(sub.mean())
        ses2.append(sub.mean_stderr("estimator"))
    z_est = _variance_z(torch.tensor(means2), torch.tensor(ses2), E2)
    worst = max(abs(z) for z in (*z_img, *z_est))
    return ClaimResult(
        "E[(mean − E)² − se²] = 0; 95% intervals cover",
        f"images z {z_img[0]:+.2f}/{z_img[1]:+.2f} (coverage {cover:.3f}); estimator z {z_est[0]:+.2f}/{z_est[1]:+.2f}",
        "|z| < 4",
        worst < 4,
        "D = 3, cosine T = 10, stratified M = 8, 400 × 20 images (nats)",
        {"z_images": z_img, "z_estimator": z_est, "coverage_images": cover},
    )


# ------------------------------------------------------------------------------------------ training losses


class _Recorder:
    """Stands in for ``Trainer.model``: calls it and keeps its latest ε̂ with ``retain_grad``."""

    def __init__(self, model):
        self.inner, self.net, self.eps = model, model.net, None

    def train(self, mode=True):
        self.inner.train(mode)

    def __call__(self, xt, k):
        eps, v = self.inner(xt, k)
        eps.retain_grad()
        self.eps = eps
        return eps, v


@claim(
    "loss.trainer_step",
    equation="E10",
    statement="one Trainer.step per loss = the engine's terms (w T L/(D ln 2), ‖ε−ε̂‖²/D); hybrid ε̂ detached in L",
    numeric="elbo_lab.ddpm.train.Trainer.step",
    estimator="exact replay of one step",
)
def _losses(seed: int) -> ClaimResult:
    import tempfile
    from pathlib import Path

    from ..bound import bound_term, simple_term
    from ..ddpm.train import TrainConfig, Trainer

    errs, grad_err = {}, math.inf
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "v.npy"
        np.save(path, np.random.default_rng(seed).integers(0, 5, size=(80, 6)))
        for loss in ("simple", "vlb", "hybrid"):
            cfg = TrainConfig(
                data=str(path),
                levels=5,
                T=10,
                steps=1,
                batch_size=16,
                dropout=0.0,
                device="cpu",
                grad_clip=0.0,
                param="eps",
                variance="learned",
                sampler="importance",
                hybrid_lambda=0.3,
                loss=loss,
                seed=seed,
            )
            tr = Trainer(cfg, Path(tmp) / loss, log=lambda *a: None)
            tr.sampler.values[:] = np.linspace(0.5, 20.0, 10)[:, None]  # warmed up, unequal: w = 1/(T p_k) ≠ 1
            tr.sampler.counts[:] = tr.sampler.history
            B = cfg.batch_size
            x0 = tr.fit[tr.perm[tr.pos : tr.pos + B]]
            g = torch.Generator()
            g.set_state(tr.g_cpu.get_state())
            k, w = tr.sampler.sample(B, g)
            gd = torch.Generator()
            gd.set_state(tr.g_dev.get_state())
            noise = torch.randn(x0.shape, generator=gd, dtype=F64)
            rec = _Recorder(tr.model)
            L = bound_term(
                rec, tr.schedule, x0, k, noise, variance="learned", decoder="discretized", levels=5,
                model_dtype=torch.float32,
            ).detach()  # fmt: skip
            simple = simple_term(noise, rec.eps.detach().to(F64))
            bpd = 1.0 / (6 * math.log(2.0))
            exp = {"simple": w * simple, "vlb": w * 10 * L * bpd, "hybrid": w * (simple + 0.3 * 10 * L * bpd)}[loss]
            exp = float(exp.mean())
            tr.model = rec  # the step's own ε̂, with its gradient kept
            got = float(tr.step())
            errs[loss] = abs(got - exp) / abs(exp)
            if loss == "hybrid":  # the vlb part must not reach ε̂: ∂loss/∂ε̂ = −2 w (ε − ε̂)/(D B)
                e = rec.eps
                want = -2.0 * w[:, None] * (noise - e.detach().to(F64)) / (6 * B)
                grad_err = float((e.grad.to(F64) - want).abs().max() / want.abs().max())
    worst = max(errs.values())
    return ClaimResult(
        "engine terms (bound_term, simple_term)",
        ", ".join(f"{k} rel. err {v:.1e}" for k, v in errs.items()) + f"; hybrid ∂/∂ε̂ rel. err {grad_err:.1e}",
        "≤ 1e-5",
        worst <= 1e-5 and grad_err <= 1e-5,
        "tiny MLP, 6-dim 5-level synthetic data, T = 10, importance weights ≠ 1, learned σ², λ = 0.3 (bits/dim)",
        {"relative_error": errs, "hybrid_eps_grad_error": grad_err},
    )

"""Claims about the baselines and the VAE side (seconds in total, seeded)."""

from __future__ import annotations

import math

import numpy as np
import torch

from .registry import ClaimResult, claim, relative_error, within_relative, within_stderr

F64 = torch.float64


@claim(
    "baselines.uniform",
    equation="-",
    statement="uniform baseline on digits = log₂ 17 bits/dim",
    numeric="elbo_lab.baselines.uniform_log_prob",
)
def _uniform(seed: int) -> ClaimResult:
    from ..baselines import uniform_log_prob
    from ..data import load_digits

    ds = load_digits()
    bpd = float(-uniform_log_prob(ds.test, ds.levels).mean() / (ds.dim * math.log(2)))
    exact = math.log2(17)
    ok = abs(bpd - exact) < 1e-12
    return ClaimResult(
        f"{exact:.6f} bits/dim", f"{bpd:.6f} bits/dim", "1e-12 bits/dim", ok, "exact", {"bits_per_dim": bpd}
    )


@claim(
    "baselines.per_pixel",
    equation="-",
    statement="per-pixel categorical NLL = an independent numpy count (add-α smoothing)",
    numeric="elbo_lab.baselines.PerPixelCategorical",
)
def _per_pixel(seed: int) -> ClaimResult:
    from ..baselines import PerPixelCategorical
    from ..data import load_digits

    ds = load_digits()
    pp = PerPixelCategorical.fit(ds.train, ds.levels)
    obs = -pp.log_prob(ds.test).numpy()
    tr = np.rint((ds.train.reshape(len(ds.train), -1).numpy() + 1) * 8).astype(int)
    te = np.rint((ds.test.reshape(len(ds.test), -1).numpy() + 1) * 8).astype(int)
    counts = np.stack([np.bincount(tr[:, d], minlength=17) for d in range(tr.shape[1])])  # (D, K)
    logp = np.log((counts + pp.alpha) / (len(tr) + 17 * pp.alpha))
    ref = -logp[np.arange(te.shape[1]), te].sum(1)
    err = relative_error(obs, ref)
    bpd = float(obs.mean() / (ds.dim * math.log(2)))
    return ClaimResult(
        "numpy count",
        f"{bpd:.4f} bits/dim (test); rel. err {err:.1e}",
        "≤ 1e-12",
        err <= 1e-12,
        f"α = {pp.alpha}",
        {"bits_per_dim": bpd, "max_relative_error": err},
    )


@claim(
    "VAE.kl.torch_distributions",
    equation="E1",
    statement="the VAE's KL to N(0, I) = torch.distributions.kl_divergence",
    derivation="gaussian_kl",
    numeric="elbo_lab.vae.estimators.kl_to_standard_normal",
)
def _kl_td(seed: int) -> ClaimResult:
    from torch.distributions import Normal, kl_divergence

    from ..vae.estimators import kl_to_standard_normal

    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(200, 8, generator=g, dtype=F64) * 2
    var = torch.exp(torch.randn(200, 8, generator=g, dtype=F64))
    obs = kl_to_standard_normal(mean, var)
    ref = kl_divergence(Normal(mean, var.sqrt()), Normal(torch.zeros_like(mean), torch.ones_like(var))).sum(-1)
    return within_relative(obs.numpy(), ref.numpy(), 1e-12, "torch.distributions", "200 × 8 random Gaussians")


def _ppca(seed: int):
    from ..data import load_digits
    from ..oracles.ppca import PPCA, LinearEncoder

    ds = load_digits()
    ppca = PPCA.fit(ds.train.flatten(1).double(), 8)
    ex = ppca.exact_encoder()
    x = ds.test.flatten(1).double()[:100]
    return ppca, ppca.with_encoder(LinearEncoder(ex.a * 0.95, ex.c, ex.var * 1.5)), x


@claim(
    "VAE.ppca.gap_is_kl",
    equation="E3",
    statement="linear-Gaussian oracle: log p(x) − ELBO = KL(q(z|x) ‖ p(z|x)), 0 at the true posterior",
    derivation="vae_elbo",
    numeric="elbo_lab.oracles.ppca.PPCA",
)
def _ppca_gap(seed: int) -> ClaimResult:
    ppca, model, x = _ppca(seed)
    logp = ppca.log_marginal(x)
    gap = logp - model.exact_elbo(x)
    m, v = model.encode(x)
    kl = ppca.kl_to_posterior(x, m, v)
    err = relative_error(gap.numpy(), kl.numpy())
    at_post = float((logp - ppca.with_encoder().exact_elbo(x)).abs().max())
    ok = err < 1e-8 and at_post < 1e-8 and bool((gap > 0).all())
    return ClaimResult(
        "gap = KL > 0; 0 at posterior",
        f"rel. err {err:.1e}; |gap| at posterior {at_post:.1e}",
        "≤ 1e-8",
        ok,
        "PPCA (L = 8) on 100 test digits as continuous vectors",
        {"max_relative_error": err, "gap_at_posterior": at_post, "mean_gap_nats": float(gap.mean())},
    )


@claim(
    "VAE.ppca.iwae_converges",
    equation="E3",
    statement="linear-Gaussian oracle: ELBO < IWAE_1000 ≈ exact log p(x)",
    derivation="vae_elbo",
    numeric="elbo_lab.vae.estimators.iwae",
    estimator="IWAE, k = 1000",
)
def _ppca_iwae(seed: int) -> ClaimResult:
    from ..vae.estimators import estimate

    ppca, model, x = _ppca(seed)
    g = torch.Generator().manual_seed(seed)
    _, iw = estimate(model, x, "iwae", k=1000, generator=g)
    logp = ppca.log_marginal(x)
    d = logp - iw
    out = within_stderr(float(iw.mean()), float(d.std() / math.sqrt(len(d))), float(logp.mean()), unit="nats")
    elbo_gap = float((logp - model.exact_elbo(x)).mean())
    out.passed = out.passed and elbo_gap > float(d.mean()) + 4 * float(d.std() / math.sqrt(len(d)))
    out.detail += f"; ELBO is {elbo_gap:.3f} nats below log p(x)"
    return out


def _tiny_ddpm(seed: int, param: str = "eps", learned: bool = False):
    from ..ddpm.model import build_eps_model, make_net_config
    from ..schedule import NoiseSchedule

    s = NoiseSchedule.cosine(10)
    cfg = make_net_config(
        (1, 8, 8),
        T=s.T,
        learned_variance=learned,
        out_per_channel=17 if param != "eps" else 1,
        base_channels=8,
        attention=False,
        dropout=0.0,
    )
    return build_eps_model(cfg, s, param=param, levels=17, device="cpu", seed=seed).eval()


@claim(
    "DDPM.routes.kl_equals_eps",
    equation="E9",
    statement="seeded, untrained U-Net ε-model (T = 10) on 16 test digits: closed-form KL terms = ε-weighted form "
    "(σ² = β̃ and β)",
    derivation="eps_weight",
    numeric="elbo_lab.bound.variational_bound(form='kl'|'eps')",
)
def _ddpm_kl_eps(seed: int) -> ClaimResult:
    from ..bound import variational_bound
    from ..data import load_digits

    model = _tiny_ddpm(seed)
    x = load_digits(dtype=F64).test[:16]
    pairs = []
    for variance in ("posterior", "beta"):
        kw = dict(variance=variance, levels=17, generator=seed, model_dtype=torch.float32)
        a = variational_bound(model, model.schedule, x, form="kl", **kw)
        b = variational_bound(model, model.schedule, x, form="eps", **kw)
        pairs.append((a.terms[:, 1:].numpy(), b.terms[:, 1:].numpy()))
    a, b = (np.concatenate(p) for p in zip(*pairs))
    return within_relative(a, b, 1e-9, "KL form", "a seeded U-Net (T = 10), 16 test digits, t ≥ 2, σ² = β̃ and β")


@claim(
    "DDPM.routes.trajectory",
    equation="E7",
    statement="seeded, untrained U-Net ε-model (T = 10) on a test digit: whole-trajectory Monte Carlo = the full bound",
    derivation="telescoping",
    numeric="elbo_lab.bound.trajectory_bound, variational_bound",
    estimator="300 trajectories vs full",
)
def _ddpm_traj(seed: int) -> ClaimResult:
    from ..bound import trajectory_bound, variational_bound
    from ..data import load_digits

    model = _tiny_ddpm(seed)
    x = load_digits(dtype=F64).test[:1]
    kw = dict(variance="beta", levels=17, model_dtype=torch.float32)
    tr = trajectory_bound(model, model.schedule, x.repeat(300, 1, 1, 1), generator=seed, **kw)
    full = variational_bound(model, model.schedule, x.repeat(150, 1, 1, 1), generator=seed + 1, **kw)
    se = math.hypot(tr.std().item() / math.sqrt(len(tr)), full.mean_stderr())
    out = within_stderr(tr.mean().item(), se, full.mean(), unit="nats")
    out.expected = f"{full.mean():.5g} nats (full estimator)"
    return out

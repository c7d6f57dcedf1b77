"""The guide's central claim, measured step by step: the bound is a weighted sum of ε-errors, L_simple the unweighted
mean.  Data tables for the report's figures (``elbo-lab run``); no formula of its own.

For each paper step t ≥ 2 the bound's term splits exactly (E8 mean matching, E9 weight) into

    L_{t−1} = Σ_d w_{t,d} (ε_d − ε̂_d)²  +  Σ_d KL(N(0, β̃_t) ‖ N(0, σ²_{t,d}))        (nats)
            =        "w_t · MSE_t"        +        "variance constant c_t"

with w_{t,d} = β_t² / (2 σ²_{t,d} α_t (1 − ᾱ_t)) -- the model's *own* σ_t²: β̃_t, β_t, or the learned
σ²(x_t, t) of improved DDPM, which differs per pixel and per image.  The weight is the engine's
:func:`elbo_lab.diffusion.eps_weight` for σ² = β_t rescaled by β_t/σ² (the formula is linear in 1/σ²), and the
constant is the engine's :func:`elbo_lab.gaussian.normal_kl`, so nothing here re-derives E9.  L_simple averages
the same squared errors with weight 1 over t (E10).  L_0 (the decoder, t = 1) and L_T (the prior) are not ε-errors
and are reported apart.

:func:`per_step_table` evaluates every step t = 1..T for every image with one network evaluation per (image,
step) pair, takes the engine's term from :func:`elbo_lab.bound.bound_term` and the ε̂, σ² the model returned in
that same call, and reports per step the dataset means (and standard errors over images) of all four
quantities.  Its total L_T + Σ_t L_{t−1} + L_0 is the ``full`` estimator of the bound (every step, one ε per
step) on these images -- the same estimator ``elbo-lab bound --estimator full`` runs, with its own random numbers.
Tests: ``tests/test_reduction.py`` (w·MSE + c = the engine's KL term per pair; the total agrees with
``variational_bound(estimator="full")``; the oracle table equals its closed-form bound).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from . import diffusion as D
from .bound import _reverse_variance, bound_term, prior_term
from .gaussian import normal_kl

__all__ = ["forward_strip", "mass_summary", "oracle_per_step_table", "per_step_table", "reverse_strip_steps"]

F64 = torch.float64
LN2 = math.log(2.0)


class _Capture:
    """Calls the ε-model and remembers what it returned (ε̂ and, for a learned variance, v) for the decomposition."""

    def __init__(self, model):
        self.model, self.eps, self.v = model, None, None

    def __call__(self, xt, k):
        out = self.model(xt, k)
        self.eps, self.v = out if isinstance(out, tuple) else (out, None)
        return out


def _sigma2(s, k, variance, v, like):
    """The model's σ_t² per value, broadcast to ``like`` (B, ...): the engine's own choice (bound._reverse_variance)."""
    return _reverse_variance(s, k, variance, None if v is None else v.to(F64), like).expand_as(like)


def _decompose(s, k, noise, eps_hat, sigma2):
    """(w·‖ε − ε̂‖², c, ‖ε − ε̂‖²) per row (B,) in nats, for rows with k ≥ 1 (E8 + E9, see the module doc)."""
    shape = (-1,) + (1,) * (noise.ndim - 1)
    w = D.eps_weight_at(s, k, sigma2)  # β_t²/(2 σ² α_t (1 − ᾱ_t)), E9
    err2 = (noise - eps_hat.to(F64)).pow(2)
    var_q = s.posterior_variance[k].reshape(shape).expand_as(sigma2)
    const = normal_kl(torch.zeros_like(var_q), var_q, torch.zeros_like(var_q), sigma2)
    return (w * err2).flatten(1).sum(1), const.flatten(1).sum(1), err2.flatten(1).sum(1)


@torch.no_grad()
def per_step_table(
    model,
    schedule,
    x0: torch.Tensor,
    *,
    variance: str,
    levels: int,
    generator: int = 0,
    chunk_size: int = 1024,
) -> dict:
    """Per-step decomposition of the bound of ``model`` on the images ``x0`` (N, *shape), every t = 1..T.

    Returns plain lists (index k = t − 1, so ``t = k + 1``), all in bits/dim (nats / (D ln 2)) except the MSE:
    ``term`` (the engine's L_{t−1}; t = 1 is L_0), ``wmse`` and ``const`` (its two parts, NaN at t = 1),
    ``mse_per_dim`` (E‖ε − ε̂‖²/D, what L_simple averages; also at t = 1), each with ``*_se`` (standard error over
    images); ``prior`` (L_T), ``decoder`` (L_0), ``total`` (L_T + Σ_t term) with ``total_se`` (over images),
    ``l_simple`` (mean over t of mse_per_dim), ``per_image_total`` and the evaluation count.
    """
    s = schedule.to(x0.device)
    x0 = x0.to(F64)
    N, T, dim = x0.shape[0], s.T, x0[0].numel()
    gen = torch.Generator(device=x0.device).manual_seed(int(generator))
    n_all = torch.arange(N, device=x0.device).repeat_interleave(T)  # image-major (image, step) pairs
    k_all = torch.arange(T, device=x0.device).repeat(N)
    P = N * T
    term, wmse, const, mse = (torch.empty(P, dtype=F64, device=x0.device) for _ in range(4))
    cap = _Capture(model)
    kw = dict(variance=variance, decoder="discretized", levels=levels, model_dtype=F64)
    for a in range(0, P, chunk_size):
        b = min(a + chunk_size, P)
        n, k = n_all[a:b], k_all[a:b]
        noise = torch.randn((b - a, *x0.shape[1:]), generator=gen, dtype=F64, device=x0.device)
        term[a:b] = bound_term(cap, s, x0[n], k, noise, **kw)  # one network evaluation per pair
        sig2 = _sigma2(s, k, variance, cap.v, noise)
        wmse[a:b], const[a:b], mse[a:b] = _decompose(s, k, noise, cap.eps, sig2)
    bpd = 1.0 / (dim * LN2)
    term, wmse, const = (z.reshape(N, T) * bpd for z in (term, wmse, const))
    mse = mse.reshape(N, T) / dim
    wmse[:, 0], const[:, 0] = float("nan"), float("nan")  # L_0 is the decoder, not an ε-error
    prior = prior_term(s, x0) * bpd  # (N,)
    per_image = prior + term.sum(1)

    def mean_se(z):
        m = z.mean(0)
        se = z.std(0) / math.sqrt(N) if N > 1 else torch.full_like(m, float("nan"))
        return m.tolist(), se.tolist()

    out = {"t": list(range(1, T + 1)), "images": N, "dim": dim, "variance": variance, "n_evals": P}
    for name, z in (("term", term), ("wmse", wmse), ("const", const), ("mse_per_dim", mse)):
        out[name], out[name + "_se"] = mean_se(z)
    out["prior"] = float(prior.mean())
    out["decoder"] = float(term[:, 0].mean())
    out["total"] = float(per_image.mean())
    out["total_se"] = float(per_image.std() / math.sqrt(N)) if N > 1 else float("nan")
    out["l_simple"] = float(mse.mean())
    out["per_image_total"] = per_image.tolist()
    out["units"] = {
        "term, wmse, const, prior, decoder, total": "bits/dim (NLL bound, >= -log p / (D ln 2))",
        "mse_per_dim, l_simple": "squared error per dimension, E||eps - eps_hat||^2 / D (dimensionless)",
        "t": "paper step t = 1..T (code index k = t - 1)",
    }
    return out


def oracle_per_step_table(data, schedule, variance: str = "posterior") -> dict:
    """The same table for the Gaussian oracle (:class:`elbo_lab.oracles.GaussianData` with its MMSE ε-predictor),
    in closed form: ``mse_per_dim`` = tr(I − (1 − ᾱ_t) C_t⁻¹)/D, ``wmse`` = w_t · MSE_t (E9 weights of the fixed
    σ_t²), ``const`` = D·KL(N(0, β̃_t) ‖ N(0, σ_t²)); ``term`` is the oracle's own expected bound term (a different
    route: the mean-matching KL at the root-mean-square error), so ``term = wmse + const`` is checked, not assumed.
    ``exact_nll`` is the model's exact expected −log p_θ(x_0) (bits/dim), so the bound's gap is visible.
    """
    s = schedule
    T, dim = s.T, data.dim
    bpd = 1.0 / (dim * LN2)
    ob = data.expected_bound(s, variance)
    mse = data.eps_mse(s)  # (T,) E‖ε − ε̂‖²
    w = D.eps_weight(s, variance)
    var_q = s.posterior_variance.to(F64)
    sig2 = D.reverse_variance(s, None, variance).to(F64)
    const = dim * normal_kl(torch.zeros_like(var_q), var_q, torch.zeros_like(var_q), sig2)
    wmse, const = (w * mse * bpd), const * bpd
    wmse[0], const[0] = float("nan"), float("nan")
    zeros = [0.0] * T
    return {
        "t": list(range(1, T + 1)),
        "dim": dim,
        "variance": variance,
        "term": (ob.terms * bpd).tolist(),
        "term_se": zeros,
        "wmse": wmse.tolist(),
        "wmse_se": zeros,
        "const": const.tolist(),
        "const_se": zeros,
        "mse_per_dim": (mse / dim).tolist(),
        "mse_per_dim_se": zeros,
        "prior": float(ob.prior * bpd),
        "decoder": float(ob.decoder * bpd),
        "total": float(ob.total * bpd),
        "total_se": 0.0,
        "l_simple": float((mse / dim).mean()),
        "exact_nll": data.model_cross_entropy(s, variance) * bpd,
        "entropy": data.entropy() * bpd,
        "units": {
            "term, wmse, const, prior, decoder, total, exact_nll, entropy": "bits/dim (continuous density)",
            "mse_per_dim, l_simple": "squared error per dimension (dimensionless)",
            "t": "paper step t = 1..T",
        },
    }


def mass_summary(table: dict, ranges=((2, 10),)) -> dict:
    """Where the bound's bits sit, from a :func:`per_step_table`: the bits in each step range [a, b] and their
    share of the total, and the step by which the cumulative L_T-free sum Σ_{s ≤ t} L_{s−1} reaches half and 90 %
    of Σ_t L_{t−1}.  Captions are built from these numbers (and tests recompute them)."""
    term = np.asarray(table["term"], dtype=float)
    t = np.asarray(table["t"])
    total = float(table["total"])
    cum = np.cumsum(term)
    out = {"total": total, "sum_terms": float(cum[-1]), "ranges": []}
    for a, b in ranges:
        m = (t >= a) & (t <= b)
        bits = float(term[m].sum())
        out["ranges"].append({"from": int(a), "to": int(b), "bits_per_dim": bits, "share": bits / total})
    for q in (0.5, 0.9):
        out[f"t_{int(q * 100)}"] = int(t[np.searchsorted(cum, q * cum[-1])])
    return out


def forward_strip(schedule, x0: torch.Tensor, ts, *, generator: int = 0) -> dict:
    """One image x_0 (*shape) noised to each paper step t in ``ts`` with one shared ε (E5 ``q_sample``), with ᾱ_t and
    SNR(t) = ᾱ_t/(1 − ᾱ_t) per step."""
    s = schedule
    x0 = x0.to(F64)
    g = torch.Generator().manual_seed(int(generator))
    noise = torch.randn(x0.shape, generator=g, dtype=F64)
    ks = torch.tensor([int(t) - 1 for t in ts])
    xt = D.q_sample(s, x0.expand(len(ks), *x0.shape), ks, noise.expand(len(ks), *x0.shape))
    abar = s.alpha_bars.to(F64)[ks]
    return {
        "t": [int(t) for t in ts],
        "alpha_bar": abar.tolist(),
        "snr": (abar / s.one_minus_alpha_bars.to(F64)[ks]).tolist(),
        "x0": x0.tolist(),
        "xt": xt.tolist(),
        "units": {"alpha_bar": "ᾱ_t (dimensionless)", "snr": "ᾱ_t/(1−ᾱ_t)", "x0, xt": "pixel values in [−1, 1]"},
    }


def reverse_strip_steps(T: int, n: int = 8) -> list[int]:
    """Paper steps at which the reverse strip shows x_t and x̂_0: T, then geometrically down to 1."""
    ts = np.unique(np.round(np.geomspace(1, T, n)).astype(int))[::-1]
    return [int(t) for t in ts]

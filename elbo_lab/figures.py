"""The eight figures of the report (matplotlib, labelled axes with units). Each function takes plain arrays,
draws one figure and writes it as PNG and SVG (atomically); the experiments/ scripts and ``elbo-lab run``
compute the numbers and call these.  Units: bits/dim = nats / (D ln 2).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .io import atomic_write  # noqa: E402

__all__ = [
    "save",
    "fig_bound_vs_loss",
    "fig_bound_terms",
    "fig_eps_weights",
    "fig_per_step_mse",
    "fig_oracle_gap",
    "fig_mc_convergence",
    "fig_vae_iwae",
    "fig_samples",
]

plt.rcParams.update({"figure.dpi": 110, "font.size": 10, "axes.grid": True, "grid.alpha": 0.3})


def save(fig, out_dir: str | Path, name: str) -> list[Path]:
    """Write ``name.png`` and ``name.svg`` into ``out_dir`` atomically; close the figure."""
    out_dir = Path(out_dir)
    paths = []
    for ext in ("png", "svg"):
        p = out_dir / f"{name}.{ext}"
        atomic_write(p, lambda tmp, ext=ext: fig.savefig(tmp, format=ext, bbox_inches="tight"))
        paths.append(p)
    plt.close(fig)
    return paths


def fig_bound_vs_loss(
    steps, l_simple, bound_steps, bound_bpd, bound_se=None, *, vae_bpd=None, vae_label="VAE", baseline_bpd=None
):
    """Figure 1: L_simple (left axis, per-dimension ε-MSE) and the full bound (right axis, bits/dim) over training."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    ax.plot(steps, l_simple, color="tab:blue", alpha=0.8, label="L_simple (train batches)")
    ax.set_xlabel("training step")
    ax.set_ylabel("L_simple = E‖ε − ε̂‖² / D", color="tab:blue")
    ax.set_yscale("log")
    ax2 = ax.twinx()
    ax2.grid(False)
    bound_bpd = np.asarray(bound_bpd)
    ax2.plot(bound_steps, bound_bpd, "o-", color="tab:red", label="DDPM bound (held out)")
    if bound_se is not None:
        se = np.asarray(bound_se)
        ax2.fill_between(bound_steps, bound_bpd - 2 * se, bound_bpd + 2 * se, color="tab:red", alpha=0.2)
    if vae_bpd is not None:
        ax2.axhline(vae_bpd, color="tab:green", ls="--", label=vae_label)
    if baseline_bpd is not None:
        ax2.axhline(baseline_bpd, color="gray", ls=":", label="per-pixel categorical")
    ax2.set_ylabel("negative-log-likelihood bound (bits/dim)", color="tab:red")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax2.legend(h1 + h2, l1 + l2, loc="upper right", fontsize=8)
    ax.set_title("The simple ε-loss and the full variational bound during training")
    return fig


def fig_bound_terms(terms_bpd, prior_bpd, decoder_bpd, *, terms_se=None, label="DDPM"):
    """Figure 2: the bound term by term over t (bits/dim, log scale); L_T and L_0 marked."""
    terms_bpd = np.asarray(terms_bpd, dtype=float)
    T = len(terms_bpd)
    t = np.arange(1, T + 1)
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    ax.plot(t[1:], np.maximum(terms_bpd[1:], 1e-12), color="tab:blue", label="L_{t−1} (t ≥ 2)")
    if terms_se is not None:
        se = np.asarray(terms_se, dtype=float)[1:]
        lo = np.maximum(terms_bpd[1:] - 2 * se, 1e-12)
        ax.fill_between(t[1:], lo, terms_bpd[1:] + 2 * se, alpha=0.2, color="tab:blue")
    ax.scatter([1], [max(decoder_bpd, 1e-12)], color="tab:red", zorder=3, label=f"L_0 = {decoder_bpd:.3g}")
    ax.scatter([T], [max(prior_bpd, 1e-12)], color="tab:green", zorder=3, label=f"L_T = {prior_bpd:.2g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("diffusion step t")
    ax.set_ylabel("term of the bound (bits/dim)")
    total = float(np.nansum(terms_bpd) + prior_bpd)
    ax.set_title(f"{label}: where the bound's {total:.3f} bits/dim sit")
    ax.legend(fontsize=8)
    return fig


def fig_eps_weights(weights: Mapping[str, np.ndarray]):
    """Figure 3: the ε-form weights w_t (E9) of the true bound against L_simple's constant weight."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for name, w in weights.items():
        w = np.asarray(w, dtype=float)
        t = np.arange(1, len(w) + 1)
        ax.plot(t[1:], w[1:], label=f"w_t, {name}")
    ax.axhline(1.0, color="k", ls="--", label="L_simple: w_t = 1")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("diffusion step t")
    ax.set_ylabel("weight on E‖ε − ε̂‖² (nats per unit MSE)")
    ax.set_title("Bound weights β²/(2σ²α(1−ᾱ)) = ½(SNR(t−1)/SNR(t) − 1) vs. L_simple")
    ax.legend(fontsize=8)
    return fig


def fig_per_step_mse(mse, weights, *, dim: int):
    """Figure 4: per-step ε-MSE of the trained model next to w_t·MSE (bits/dim): where the bound's mass lies."""
    mse = np.asarray(mse, dtype=float)
    w = np.asarray(weights, dtype=float)
    t = np.arange(1, len(mse) + 1)
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    ax.plot(t, mse / dim, label="ε-MSE per dimension (what L_simple averages)")
    contrib = w[1:] * mse[1:] / (dim * np.log(2))
    ax.plot(t[1:], contrib, label="w_t · ε-MSE (bits/dim; the bound's term)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("diffusion step t")
    ax.set_ylabel("per-step value")
    ax.set_title("Same errors, different weights: L_simple vs. the bound")
    ax.legend(fontsize=8)
    return fig


def fig_oracle_gap(Ts: Sequence[int], gaps: Mapping[str, Sequence[float]]):
    """Figure 5: Gaussian oracle -- the bound's gap to the exact likelihood (bits/dim) against T."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for name, g in gaps.items():
        ax.plot(Ts, np.maximum(np.asarray(g, dtype=float), 1e-16), "o-", label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("number of steps T")
    ax.set_ylabel("bound − exact NLL (bits/dim)")
    ax.set_title("Gaussian data, optimal denoiser: the gap closes as T grows")
    ax.legend(fontsize=8)
    return fig


def fig_mc_convergence(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float], Sequence[float]]],
    exact: float | None = None,
    exact_label: str = "full estimator",
):
    """Figure 6: estimate ± stderr (bits/dim) against network evaluations, one curve per estimator."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for name, (n, est, se) in curves.items():
        n, est, se = map(lambda a: np.asarray(a, dtype=float), (n, est, se))
        ax.errorbar(n, est, yerr=2 * se, fmt="o-", capsize=3, label=f"{name} (±2 stderr)")
    if exact is not None:
        ax.axhline(exact, color="k", ls="--", label=exact_label)
    ax.set_xscale("log")
    ax.set_xlabel("network evaluations")
    ax.set_ylabel("bound estimate (bits/dim)")
    ax.set_title("Monte Carlo convergence of the bound estimators")
    ax.legend(fontsize=8)
    return fig


def fig_vae_iwae(ks, iwae, iwae_se, elbo, elbo_se, *, oracle_ks=None, oracle_gap=None, oracle_gap_se=None):
    """Figure 7: VAE -- ELBO and IWAE_k against k (bits/dim); the linear-Gaussian oracle's gap to log p(x)."""
    ncols = 2 if oracle_ks is not None else 1
    fig, axes = plt.subplots(1, ncols, figsize=(5.2 * ncols, 4.0), squeeze=False)
    ax = axes[0, 0]
    ax.errorbar(ks, iwae, yerr=2 * np.asarray(iwae_se), fmt="o-", capsize=3, label="−IWAE_k (NLL bound)")
    ax.axhline(elbo, color="tab:red", ls="--", label=f"−ELBO = {elbo:.3f} ± {elbo_se:.3f}")
    ax.set_xscale("log")
    ax.set_xlabel("importance samples k")
    ax.set_ylabel("NLL bound on test digits (bits/dim)")
    ax.set_title("VAE on digits: the bound tightens with k")
    ax.legend(fontsize=8)
    if oracle_ks is not None:
        ax = axes[0, 1]
        se = None if oracle_gap_se is None else 2 * np.asarray(oracle_gap_se, dtype=float)
        ax.errorbar(oracle_ks, oracle_gap, yerr=se, fmt="o-", capsize=3, label="log p(x) − IWAE_k (±2 stderr)")
        ax.axhline(0.0, color="k", lw=0.8)
        ax.set_xscale("log")
        ax.legend(fontsize=8)
        ax.set_xlabel("importance samples k")
        ax.set_ylabel("log p(x) − IWAE_k (nats)")
        ax.set_title("Linear-Gaussian oracle: gap to exact log p(x)")
    fig.tight_layout()
    return fig


def fig_samples(grids: Mapping[str, np.ndarray], *, ncol: int = 8):
    """Figure 8: sample grids side by side; each entry (N, H, W) (or (N, 1, H, W)) in [−1, 1]."""
    fig, axes = plt.subplots(1, len(grids), figsize=(3.2 * len(grids), 3.4), squeeze=False)
    for ax, (name, imgs) in zip(axes[0], grids.items()):
        imgs = np.asarray(imgs, dtype=float)
        if imgs.ndim == 4:
            imgs = imgs[:, 0]
        n = (len(imgs) // ncol) * ncol or len(imgs)
        imgs = imgs[:n]
        rows = max(1, n // ncol)
        h, w = imgs.shape[1:]
        canvas = np.ones((rows * (h + 1) - 1, min(n, ncol) * (w + 1) - 1))
        for i, im in enumerate(imgs):
            r, c = divmod(i, ncol)
            canvas[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = (im + 1) / 2
        ax.imshow(canvas, cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(name)
        ax.axis("off")
    return fig

"""The report's figures (matplotlib, labelled axes with units), each drawn from one data table.

Every ``fig_*`` function takes a plain dict of lists (the table) and draws only what is in it; :func:`save` writes
``NAME.png``, ``NAME.svg`` and the table as ``NAME.json`` (with its units) side by side, atomically, so every
plotted number can be read back and tested against the engine (``tests/test_figures.py``, ``tests/test_run.py``).
Titles that state a fact are built from the table by the ``*_facts`` helpers here, which the tests recompute.
``elbo-lab run`` (:mod:`elbo_lab.run`) computes the tables.  Units: bits/dim = nats / (D ln 2).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .io import atomic_write, atomic_write_text  # noqa: E402

__all__ = [
    "FIGURES",
    "save",
    "fig_bound_vs_loss",
    "fig_training_curve",
    "fig_bound_terms",
    "fig_eps_weights",
    "fig_per_step_mse",
    "fig_reduction",
    "fig_oracle_gap",
    "fig_mc_convergence",
    "fig_vae_iwae",
    "fig_samples",
    "fig_forward_noising",
    "fig_reverse_process",
    "gap_facts",
    "gap_phrase",
    "reduction_annotation",
]

plt.rcParams.update({"figure.dpi": 110, "font.size": 10, "axes.grid": True, "grid.alpha": 0.3})


def _clean(x):
    """JSON-safe copy: NaN/Inf → None, numpy → python."""
    if isinstance(x, Mapping):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, np.ndarray):
        return _clean(x.tolist())
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def save(fig, out_dir: str | Path, name: str, table: Mapping | None = None) -> list[Path]:
    """Write ``name.png``, ``name.svg`` (and the figure's data table ``name.json``) into ``out_dir`` atomically;
    close the figure."""
    out_dir = Path(out_dir)
    paths = []
    for ext in ("png", "svg"):
        p = out_dir / f"{name}.{ext}"
        atomic_write(p, lambda tmp, ext=ext: fig.savefig(tmp, format=ext, bbox_inches="tight"))
        paths.append(p)
    if table is not None:
        p = out_dir / f"{name}.json"
        atomic_write_text(p, json.dumps(_clean({"figure": name, **table}), indent=1, ensure_ascii=False))
        paths.append(p)
    plt.close(fig)
    return paths


FLOOR = 1e-12  # log-scale markers below this are drawn at it, and their label says so


def _l0_label(v: float) -> str:
    where = f" (drawn at {FLOOR:g})" if abs(v) < FLOOR else ""
    return f"{'|L_0|' if v < 0 else 'L_0'} = {abs(v):.3g} bits/dim{where}"


def _arr(table, key):
    return np.asarray([np.nan if v is None else v for v in table[key]], dtype=float)


# ------------------------------------------------------------------------------------------------ training
def fig_training_curve(tab: Mapping):
    """Held-out bound (± 2 s.e., the estimator named) and L_simple (held-out and on training batches) per step."""
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.0))
    st, b, se = np.asarray(tab["step"]), _arr(tab, "bound"), _arr(tab, "bound_se")
    ax.plot(st, b, "o-", ms=3, color="tab:red", label=f"DDPM bound, held out ({tab['estimator']})")
    ax.fill_between(st, b - 2 * se, b + 2 * se, color="tab:red", alpha=0.2, label="± 2 s.e. (estimator)")
    if tab.get("vae_bpd") is not None:
        ax.axhline(tab["vae_bpd"], color="tab:green", ls="--", label=f"VAE −IWAE, test = {tab['vae_bpd']:.3f}")
    if tab.get("per_pixel_bpd") is not None:
        ax.axhline(
            tab["per_pixel_bpd"], color="gray", ls=":", label=f"per-pixel categorical = {tab['per_pixel_bpd']:.3f}"
        )
    lo = np.nanmin(b - 2 * se)
    ax.set_ylim(lo - 0.1, min(np.nanmax(b + 2 * se), lo + 3.0) + 0.1)
    ax.set_xlabel("training step")
    ax.set_ylabel("NLL bound (bits/dim)")
    ax.set_title(f"Held-out bound at {len(st)} points")
    ax.legend(fontsize=7)
    s, sse = _arr(tab, "simple"), _arr(tab, "simple_se")
    bx.plot(st, s, "o-", ms=3, color="tab:blue", label="L_simple, held out")
    bx.fill_between(st, s - 2 * sse, s + 2 * sse, color="tab:blue", alpha=0.2)
    if tab.get("train_step"):
        bx.plot(
            tab["train_step"], tab["train_simple"], color="tab:cyan", alpha=0.7, lw=1, label="L_simple, train batches"
        )
    bx.set_yscale("log")
    bx.set_xlabel("training step")
    bx.set_ylabel("L_simple = E‖ε − ε̂‖²/D (dimensionless)")
    bx.set_title("The simple loss")
    bx.legend(fontsize=7)
    fig.tight_layout()
    return fig


def fig_bound_vs_loss(tab: Mapping):
    """L_simple (left axis) and the held-out bound (right axis, bits/dim) on one training-step axis."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    st = np.asarray(tab["step"])
    ax.plot(st, _arr(tab, "simple"), "o-", ms=3, color="tab:blue", label="L_simple (held out)")
    if tab.get("train_step"):
        ax.plot(
            tab["train_step"], tab["train_simple"], color="tab:blue", alpha=0.35, lw=1, label="L_simple (train batches)"
        )
    ax.set_xlabel("training step")
    ax.set_ylabel("L_simple = E‖ε − ε̂‖² / D", color="tab:blue")
    ax.set_yscale("log")
    ax2 = ax.twinx()
    ax2.grid(False)
    b, se = _arr(tab, "bound"), _arr(tab, "bound_se")
    ax2.plot(st, b, "o-", ms=3, color="tab:red", label=f"DDPM bound (held out, {tab['estimator']})")
    ax2.fill_between(st, b - 2 * se, b + 2 * se, color="tab:red", alpha=0.2)
    if tab.get("vae_bpd") is not None:
        ax2.axhline(tab["vae_bpd"], color="tab:green", ls="--", label="VAE (−IWAE, test)")
    if tab.get("per_pixel_bpd") is not None:
        ax2.axhline(tab["per_pixel_bpd"], color="gray", ls=":", label="per-pixel categorical")
    ax2.set_ylabel("NLL bound (bits/dim)", color="tab:red")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax2.legend(h1 + h2, l1 + l2, loc="upper right", fontsize=7)
    ax.set_title(f"The simple ε-loss and the bound during training ({len(st)} held-out points)")
    return fig


# --------------------------------------------------------------------------------------------- the bound
def fig_bound_terms(tab: Mapping):
    """The bound term by term over the real step t (bits/dim, log scale); L_0 (t = 1) and L_T marked."""
    t, term, se = np.asarray(tab["t"]), _arr(tab, "term"), _arr(tab, "term_se")
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    pos = np.maximum(term[1:], 1e-12)
    ax.plot(t[1:], pos, color="tab:blue", label="L_{t−1} (t ≥ 2)")
    ax.fill_between(t[1:], np.maximum(term[1:] - 2 * se[1:], 1e-12), term[1:] + 2 * se[1:], alpha=0.2)
    ax.scatter([t[0]], [max(abs(tab["decoder"]), FLOOR)], color="tab:red", zorder=3, label=_l0_label(tab["decoder"]))
    ax.scatter([t[-1]], [max(tab["prior"], FLOOR)], color="tab:green", zorder=3, label=f"L_T = {tab['prior']:.2g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("diffusion step t")
    ax.set_ylabel("term of the bound (bits/dim)")
    ax.set_title(f"{tab['label']}: where the bound's {tab['total']:.3f} bits/dim sit")
    ax.legend(fontsize=8)
    return fig


def fig_per_step_mse(tab: Mapping):
    """The trained model's per-step ε-MSE, and the bound's term split into w_t·MSE (the model's own σ_t²) and the
    variance constant, over the real step t."""
    t = np.asarray(tab["t"])
    fig, (ax, bx) = plt.subplots(2, 1, figsize=(7.5, 6.4), sharex=True)
    ax.plot(t, _arr(tab, "mse_per_dim"), color="tab:blue", label="ε-MSE per dimension (what L_simple averages)")
    ax.set_yscale("log")
    ax.set_ylabel("E‖ε − ε̂‖²/D")
    ax.legend(fontsize=8)
    ax.set_title(f"Same errors, different weights (σ_t²: {tab['variance']})")
    bx.plot(t[1:], _arr(tab, "wmse")[1:], color="tab:orange", label="w_t·‖ε − ε̂‖² (model's own σ_t²)")
    bx.plot(t[1:], np.abs(_arr(tab, "const")[1:]), color="tab:purple", ls=":", label="variance constant c_t")
    bx.plot(t[1:], _arr(tab, "term")[1:], color="k", lw=0.8, alpha=0.6, label="L_{t−1} (engine) = sum of the two")
    bx.set_xscale("log")
    bx.set_yscale("log")
    bx.set_xlabel("diffusion step t")
    bx.set_ylabel("bits/dim per step")
    bx.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _signed(x: float) -> str:
    return f"− {abs(x):.4g}" if x < 0 else f"+ {x:.4g}"


def reduction_annotation(tab: Mapping, sep: str = ";  ") -> str:
    """'bound = L_T + Σ_t w_t MSE_t + L_0 = X bits/dim; L_simple = mean_t MSE_t = Y' from the table's numbers."""
    mid = float(np.nansum(_arr(tab, "term")[1:]))
    return (
        f"bound = L_T + Σ_t (w_t MSE_t + c_t) + L_0 = {tab['prior']:.3g} {_signed(mid)} {_signed(tab['decoder'])} "
        f"= {tab['total']:.4f} bits/dim{sep}L_simple = mean_t MSE_t/D = {tab['l_simple']:.4f}"
    )


def fig_reduction(tab: Mapping):
    """The central claim on each model of ``tab["rows"]`` (name → per-step table; one row each, same axes): per
    step, ε-MSE and w_t·MSE_t + c_t; and their cumulative sums over t, with L_0, L_T and (for the oracle) the exact
    NLL marked."""
    rows = tab["rows"]
    n = len(rows)
    fig, axes = plt.subplots(n, 2, figsize=(12, 3.9 * n), squeeze=False, sharex=True)
    for (name, tab), (ax, bx) in zip(rows.items(), axes):
        t = np.asarray(tab["t"])
        mse, term = _arr(tab, "mse_per_dim"), _arr(tab, "term")
        ax.plot(t, mse, color="tab:blue", label="ε-MSE_t / D (L_simple's summand, weight 1)")
        ax.plot(t[1:], np.abs(term[1:]), color="tab:orange", label="w_t·MSE_t + c_t (bound's term, bits/dim)")
        ax.scatter([1], [max(abs(tab["decoder"]), FLOOR)], color="tab:red", zorder=3, label=_l0_label(tab["decoder"]))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylabel(name)
        ax.set_title("per step", fontsize=9)
        ax.legend(fontsize=7, loc="lower left")
        cum_bound = tab["decoder"] + np.concatenate([[0.0], np.cumsum(term[1:])])  # L_0 + Σ_{2..t}
        cum_simple = np.cumsum(mse) / len(mse)  # (1/T) Σ_{s ≤ t} MSE_s/D → L_simple at t = T
        bx.plot(t, cum_bound, color="tab:orange", label="L_0 + Σ_{s≤t} (w_s MSE_s + c_s)  (bits/dim)")
        bx.plot(t, cum_simple, color="tab:blue", label="(1/T) Σ_{s≤t} MSE_s/D  → L_simple")
        bx.scatter(
            [t[-1]], [tab["total"]], color="k", marker="*", s=80, zorder=3, label=f"+ L_T = bound {tab['total']:.3f}"
        )
        bx.scatter(
            [t[-1]],
            [tab["l_simple"]],
            color="tab:blue",
            marker="s",
            zorder=3,
            label=f"L_simple = {tab['l_simple']:.4f}",
        )
        if tab.get("exact_nll") is not None:
            bx.axhline(tab["exact_nll"], color="tab:green", ls="--", label=f"exact NLL = {tab['exact_nll']:.3f}")
        bx.set_xscale("log")
        bx.set_title("cumulative over t", fontsize=9)
        bx.legend(fontsize=7, loc="upper left")
        bx.text(
            0.98,
            0.04,
            reduction_annotation(tab, sep="\n"),
            transform=bx.transAxes,
            fontsize=7.5,
            ha="right",
            va="bottom",
            bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "0.8"},
        )
    for ax in axes[-1]:
        ax.set_xlabel("diffusion step t")
    fig.tight_layout()
    return fig


def fig_eps_weights(tab: Mapping):
    """The ε-form weights w_t (E9) of the true bound against L_simple's constant weight."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for name, w in tab["weights"].items():
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


def gap_facts(Ts, gap) -> dict:
    """What a gap-vs-T curve does over its range, the only words a title may use: it 'closes' when it falls by more
    than 10× overall and still by more than half over the last step of T (so it is heading for 0); otherwise it
    does not close (it levels off when the last step changes it by less than 20 %)."""
    g = np.asarray(gap, dtype=float)
    ratio = float(g[-1] / g[0]) if g[0] != 0 else float("nan")
    last_step = float(g[-1] / g[-2]) if len(g) > 1 and g[-2] != 0 else float("nan")
    return {
        "T_min": int(Ts[0]),
        "T_max": int(Ts[-1]),
        "first": float(g[0]),
        "last": float(g[-1]),
        "ratio": ratio,
        "last_step_ratio": last_step,
        "closes": bool(ratio < 0.1 and last_step < 0.5),
        "levels_off": bool(last_step > 0.8),
    }


def gap_phrase(name: str, f: dict) -> str:
    """A curve's behaviour in words, from :func:`gap_facts` only."""
    span = f"{f['first']:.2g} → {f['last']:.2g} bits/dim from T = {f['T_min']} to {f['T_max']}"
    if f["closes"]:
        return f"{name}: closes ({span})"
    if f["levels_off"]:
        return f"{name}: does not close, levels off ({span})"
    return f"{name}: does not close ({span})"


def fig_oracle_gap(tab: Mapping):
    """Gaussian oracle: the bound's gap to the model's exact NLL (bits/dim) against T; the title says, from the
    data, which curves close and which level off."""
    fig, ax = plt.subplots(figsize=(6.8, 4.4))
    Ts = tab["Ts"]
    for name, g in tab["gaps"].items():
        ax.plot(Ts, np.maximum(np.asarray(g, dtype=float), 1e-16), "o-", label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("number of steps T")
    ax.set_ylabel("bound − exact NLL (bits/dim)")
    facts = {name: gap_facts(Ts, g) for name, g in tab["gaps"].items()}
    ax.set_title(
        "Gaussian data, optimal denoiser: the gap against T\n"
        + "; ".join(gap_phrase(n, f) for n, f in facts.items() if "cosine" in n.lower()),
        fontsize=8,
    )
    ax.legend(fontsize=8)
    return fig


def fig_mc_convergence(tab: Mapping):
    """Estimate ± 2 s.e. (bits/dim) against network evaluations, one curve per estimator; the full estimator's
    value on the same images as the reference line."""
    from .cite import COVERAGE_95, interval_covers

    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for name, c in tab["curves"].items():
        n, est, se = (np.asarray(c[k], dtype=float) for k in ("n_evals", "estimate", "stderr"))
        if interval_covers(name):
            ax.errorbar(n, est, yerr=2 * se, fmt="o-", capsize=3, label=f"{name} (±2 s.e.)")
        else:  # its bars are drawn dashed and say they are not a 95% interval (measured coverage in the label)
            lo, hi = COVERAGE_95[name]
            bars = ax.errorbar(
                n,
                est,
                yerr=2 * se,
                fmt="o--",
                capsize=3,
                alpha=0.8,
                label=f"{name} (±2 s.e.: not a 95% interval; the mean's covered {lo:.0%}–{hi:.0%})",
            )
            bars[-1][0].set_linestyle("--")
    ax.axhline(tab["full"], color="k", ls="--", label=f"full ({tab['full_n_evals']:,} evaluations)")
    ax.set_xscale("log")
    ax.set_xlabel("network evaluations")
    ax.set_ylabel("bound estimate (bits/dim)")
    ax.set_title(f"Monte Carlo convergence of the bound estimators ({tab['images']} test images)")
    ax.legend(fontsize=8)
    return fig


def fig_vae_iwae(tab: Mapping):
    """VAE: −ELBO and −IWAE_k against k (bits/dim); the linear-Gaussian oracle's gap to log p(x) (nats)."""
    fig, axes = plt.subplots(1, 2, figsize=(10.4, 4.0))
    ax = axes[0]
    ax.errorbar(
        tab["ks"], tab["iwae"], yerr=2 * np.asarray(tab["iwae_se"]), fmt="o-", capsize=3, label="−IWAE_k (NLL bound)"
    )
    ax.axhline(tab["elbo"], color="tab:red", ls="--", label=f"−ELBO = {tab['elbo']:.3f} ± {tab['elbo_se']:.3f}")
    ax.set_xscale("log")
    ax.set_xlabel("importance samples k")
    ax.set_ylabel("NLL bound on test digits (bits/dim)")
    ax.set_title("VAE on digits: the bound tightens with k")
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.errorbar(
        tab["oracle_ks"],
        tab["oracle_gap"],
        yerr=2 * np.asarray(tab["oracle_gap_se"]),
        fmt="o-",
        capsize=3,
        label="log p(x) − IWAE_k (±2 s.e.)",
    )
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xscale("log")
    ax.legend(fontsize=8)
    ax.set_xlabel("importance samples k")
    ax.set_ylabel("log p(x) − IWAE_k (nats)")
    ax.set_title("Linear-Gaussian oracle: gap to exact log p(x)")
    fig.tight_layout()
    return fig


def _canvas(imgs, ncol):
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
        canvas[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = (np.clip(im, -1, 1) + 1) / 2
    return canvas


def fig_samples(tab: Mapping, *, ncol: int = 8):
    """Sample grids side by side; each (N, H, W) or (N, 1, H, W) in [−1, 1] (white = −1)."""
    grids = tab["grids"]
    fig, axes = plt.subplots(1, len(grids), figsize=(3.2 * len(grids), 3.4), squeeze=False)
    for ax, (name, imgs) in zip(axes[0], grids.items()):
        ax.imshow(_canvas(imgs, ncol), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(name)
        ax.axis("off")
    return fig


def fig_forward_noising(tab: Mapping):
    """One real digit noised by q(x_t|x_0) at several t, with ᾱ_t and SNR(t) = ᾱ_t/(1 − ᾱ_t) under each."""
    xt = np.asarray(tab["xt"], dtype=float)
    n = len(tab["t"])
    fig, axes = plt.subplots(1, n + 1, figsize=(1.5 * (n + 1), 2.3))
    ims = [np.asarray(tab["x0"], dtype=float)] + list(xt)
    labels = ["x_0 (data)"] + [
        f"t = {t}\nᾱ = {a:.3g}\nSNR = {s:.2g}" for t, a, s in zip(tab["t"], tab["alpha_bar"], tab["snr"])
    ]
    for ax, im, lab in zip(axes, ims, labels):
        im = im[0] if im.ndim == 3 else im
        ax.imshow(im, cmap="gray_r", vmin=-2.5, vmax=2.5, interpolation="nearest")
        ax.set_title(lab, fontsize=7)
        ax.axis("off")
    fig.suptitle(f"Forward process q(x_t | x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I), {tab['schedule']}", fontsize=9)
    fig.tight_layout()
    return fig


def fig_reverse_process(tab: Mapping):
    """Ancestral sampling: for a few chains, x_t (top row of each pair) and the model's x̂_0(x_t) (bottom) at
    several t, down to the final sample."""
    xt, x0 = np.asarray(tab["xt"], dtype=float), np.asarray(tab["x0_hat"], dtype=float)  # (C, S, [1,] H, W)
    chains, steps = xt.shape[:2]
    fig, axes = plt.subplots(2 * chains, steps, figsize=(1.25 * steps, 1.35 * 2 * chains), squeeze=False)
    for c in range(chains):
        for j, t in enumerate(tab["t"]):
            for r, (arr, lim) in enumerate(((xt, 2.5), (x0, 1.0))):
                ax = axes[2 * c + r, j]
                im = arr[c, j]
                im = im[0] if im.ndim == 3 else im
                ax.imshow(im, cmap="gray_r", vmin=-lim, vmax=lim, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if c == 0 and r == 0:
                    ax.set_title(f"t = {t}", fontsize=8)
                if j == 0:
                    ax.set_ylabel("x_t" if r == 0 else "x̂_0", fontsize=8)
    fig.suptitle("Reverse process: x_t and the model's x̂_0(x_t, t) along ancestral sampling chains", fontsize=9)
    fig.tight_layout()
    return fig


FIGURES = {
    "training_curve": fig_training_curve,
    "bound_vs_loss": fig_bound_vs_loss,
    "bound_terms": fig_bound_terms,
    "eps_weights": fig_eps_weights,
    "per_step_mse": fig_per_step_mse,
    "reduction": fig_reduction,
    "oracle_gap": fig_oracle_gap,
    "mc_convergence": fig_mc_convergence,
    "vae_iwae": fig_vae_iwae,
    "samples": fig_samples,
    "forward_noising": fig_forward_noising,
    "reverse_process": fig_reverse_process,
}

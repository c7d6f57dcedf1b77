"""``elbo-lab bound CHECKPOINT``: the variational bound of a trained DDPM on the test (or train) split, in bits/dim,
with the per-term breakdown (L_T, each L_{t−1}, L_0) and standard errors, beside the per-pixel baseline.

The bound is the engine's (:func:`elbo_lab.bound.variational_bound`): a negative-log-likelihood bound
(≥ −log p_θ(x_0)).  ``--estimator full`` evaluates every step for every image with two ε draws (2·N·T network
evaluations) and reports the standard error of that ε noise;
``importance`` (default), ``stratified`` and ``uniform`` sample ``--budget`` steps per image and report an unbiased
standard error of the sampled steps and noise; only importance's 95% interval was measured to cover (the citation
line gives no interval for the other two: :mod:`elbo_lab.cite`).  The table groups steps; ``--json`` has every
step.  The last line is the number to cite (:func:`elbo_lab.cite.citation_line`), and ``--json`` has the same
fields under "citation" with the package version and git commit.  A progress bar with ETA goes to stderr when it is a
terminal (``--quiet``: none).

Conventions by name (:class:`elbo_lab.bound.ModelSpec`): ``--variance`` picks σ_t² (default: the checkpoint's) and
``--clip-denoised`` clips x̂_0 to [−1, 1].  A number computed the way improved-diffusion's ``calc_bpd_loop``
computes it: ``elbo-lab bound CKPT --estimator full --clip-denoised --variance fixed_large`` for a β-variance
model (``--variance posterior`` for FIXED_SMALL).  Each bounds a different model, and the output names it.
"""

from __future__ import annotations

import argparse
import dataclasses
import math

from ..errors import DataError, ElboLabError
from ..options import MAX_BUDGET, arg

HELP = "test bits/dim of a trained DDPM checkpoint with the per-term breakdown and standard errors"

ESTIMATORS = ("full", "importance", "stratified", "uniform")


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "checkpoint",
        metavar="CHECKPOINT",
        nargs="?",
        default=None,
        help="a DDPM checkpoint (best.pt / last.pt) or its run directory (or give --diffusers DIR)",
    )
    p.add_argument(
        "--diffusers",
        default=None,
        metavar="DIR",
        help="score a diffusers UNet2DModel + DDPMScheduler saved in DIR (local only; needs --data)",
    )
    p.add_argument(
        "--levels", type=arg("levels"), default=None, metavar="K", help="data levels with --diffusers (inferred)"
    )
    p.add_argument(
        "--estimator", choices=ESTIMATORS, default="importance", help="how to sum over t (default importance)"
    )
    p.add_argument(
        "--budget",
        type=arg("budget"),
        default=64,
        metavar="N",
        help=f"sampled timesteps per image, 2..{MAX_BUDGET:,} (default 64); L_0 adds 4 evaluations per image, and "
        "an importance step with p >= 1/2 is evaluated whole instead (the count printed is the total)",
    )
    p.add_argument("--split", choices=("test", "train"), default="test", help="which split (default test)")
    p.add_argument("--data", default=None, metavar="digits|FILE", help="data (default: the checkpoint's)")
    p.add_argument("--n", type=arg("bound_n"), default=None, metavar="N", help="only the first N images of the split")
    p.add_argument("--weights", choices=("ema", "model"), default="ema", help="EMA (default) or raw weights")
    p.add_argument("--device", default="auto", metavar="auto|cpu|cuda", help="where to evaluate (default auto)")
    p.add_argument("--seed", type=arg("seed"), default=0, metavar="S", help="seed of the estimator (default 0)")
    p.add_argument(
        "--variance",
        choices=("posterior", "beta", "fixed_large", "learned"),
        default=None,
        help="σ_t² convention of the model bounded (default: the checkpoint's); fixed_large = improved-diffusion's "
        "FIXED_LARGE (β_t, but β̃_2 at t = 1), beta = β_t with β_1 at t = 1",
    )
    p.add_argument(
        "--clip-denoised",
        action="store_true",
        help="clip x̂_0 to [-1, 1] in every reverse mean (the reference's clip_denoised): bounds the clipped "
        "sampler's model",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar (it is off anyway when stderr is no terminal)")
    p.add_argument("--json", metavar="FILE", help="write the result (every term) as JSON")


def _groups(T: int) -> list[tuple[int, int]]:
    """Paper-step ranges [a, b] for the table: t = 2..10 one by one, then log-spaced blocks up to T."""
    out = [(t, t) for t in range(2, min(T, 10) + 1)]
    edges = [10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000]
    lo = 11
    for e in edges[1:]:
        if lo > T:
            break
        hi = min(e, T)
        if hi >= lo:
            out.append((lo, hi))
        lo = hi + 1
    if lo <= T:
        out.append((lo, T))
    return out


def _term_stats(terms) -> tuple[list, list, list]:
    """Per-step dataset means, standard errors and counts from the (N, T) terms (NaN where not drawn)."""
    import torch

    finite = torch.isfinite(terms)
    n = finite.sum(0)  # (T,)
    t0 = torch.where(finite, terms, torch.zeros_like(terms))
    mean = t0.sum(0) / n.clamp(min=1)
    var = torch.where(finite, (terms - mean).pow(2), torch.zeros_like(terms)).sum(0) / (n - 1).clamp(min=1)
    se = (var / n.clamp(min=1)).sqrt()
    mean = torch.where(n > 0, mean, torch.full_like(mean, float("nan")))
    se = torch.where(n > 1, se, torch.full_like(se, float("nan")))
    return mean.tolist(), se.tolist(), n.tolist()


def main(args: argparse.Namespace) -> int:
    from ..ddpm.model import resolve_device
    from ..io import check_output_file

    if args.budget < 2:
        raise ElboLabError(f"--budget must be >= 2, got {args.budget}")
    if args.n is not None and args.n < 2:
        raise ElboLabError(f"--n must be >= 2, got {args.n}")
    if (args.checkpoint is None) == (args.diffusers is None):
        raise ElboLabError("give exactly one model: a CHECKPOINT or --diffusers DIR")
    if args.json:
        check_output_file(args.json, "--json")  # before the computing
    from ..distributed import setup

    dist, device_spec = setup(args.device)  # torchrun: images sharded across the ranks, gathered on rank 0
    try:
        code = _main(args, dist, resolve_device(device_spec))
    except BaseException:
        dist.close(sync=False)
        raise
    dist.close()
    return code


def _main(args: argparse.Namespace, dist, device) -> int:
    import torch

    from ..bound import ModelSpec
    from ..data import load_data
    from ..ddpm.checkpoint import load_model, resolve_checkpoint
    from ..ddpm.model import device_description
    from ..distributed import BatchInvariant, sharded_bound
    from ..io import atomic_write_json

    if args.diffusers is not None:
        path, model, ckpt, ds = _diffusers_source(args, device)
    else:
        path = resolve_checkpoint(args.checkpoint)
        model, ckpt = load_model(path, device, weights=args.weights)
        ds = load_data(args.data or ckpt["data"].get("spec", "digits"), levels=ckpt["data"]["levels"])
    cfg, info = ckpt["config"], ckpt["data"]
    spec = args.data or info.get("spec", "digits")
    if list(ds.shape) != list(info["shape"]) or ds.levels != info["levels"]:
        raise DataError(
            f"{spec}: examples of shape {ds.shape} on {ds.levels} levels, but the checkpoint was "
            f"trained on shape {tuple(info['shape'])} with {info['levels']} levels"
        )
    x = ds.test if args.split == "test" else ds.train
    if args.n is not None:
        x = x[: args.n]
    x = x.to(device, torch.float64)
    est = args.estimator
    budget = args.budget + (args.budget % 2 if est == "stratified" else 0)
    if est == "stratified" and budget // 2 > model.schedule.T - 1:
        raise ElboLabError(
            f"--estimator stratified draws two steps per stratum: --budget must be at most "
            f"{2 * (model.schedule.T - 1)} for T = {model.schedule.T}, got {args.budget}"
        )
    mspec = ckpt.get("model_spec") or ModelSpec.from_ddpm_checkpoint(ckpt)
    if args.variance == "learned" and not getattr(model, "learned_variance", getattr(model, "learned", False)):
        raise ElboLabError("--variance learned needs a model with a learned variance output (this one has none)")
    mspec = dataclasses.replace(
        mspec, variance=args.variance or mspec.variance, clip_denoised=args.clip_denoised or mspec.clip_denoised
    )
    res = sharded_bound(
        dist,
        BatchInvariant(model, rows=256 if device.type == "cuda" else 32),  # per-image numbers independent of batching
        model.schedule,
        x,
        model=mspec,
        estimator=est,
        num_samples=None if est == "full" else budget,
        generator=args.seed,
        model_dtype=torch.float64,
        bits_per_dim=True,
        progress=not args.quiet and dist.is_main,
    )
    if not dist.is_main:
        return 0
    T = model.schedule.T
    mean, se, cnt = _term_stats(res.terms.cpu())
    prior = float(res.prior.mean())
    dev = device_description(device)
    total, se_img, se_est = res.mean(), res.mean_stderr("images"), res.mean_stderr("estimator")

    from ..baselines import PerPixelCategorical

    pp = PerPixelCategorical.fit(ds.train, ds.levels)
    baseline = float(-pp.log_prob(x.cpu()).mean() / (x[0].numel() * math.log(2.0)))

    if "describe" in ckpt:
        print(f"model: {ckpt['describe']}")
    else:
        print(f"checkpoint: {path} (step {ckpt.get('step')}, {args.weights} weights, trained on {ckpt.get('device')})")
    print(f"device: {dev}" + (f"; {dist.describe()}, images sharded across them" if dist.enabled else ""))
    print(
        f"data: {ds.name} {args.split} split, {res.N} images, D = {res.dim}, {info['levels']} levels; "
        f"{cfg['param']} output, T = {T}"
    )
    print(f"model bounded: {mspec.describe()}")
    print(
        f"estimator: {est}"
        + ("" if est == "full" else f", {budget} steps per image")
        + f", {res.n_evals:,} network evaluations"
    )
    print()
    print(f"{'term':<16}{'bits/dim':>12}{'± stderr':>12}")
    print(f"{'L_T (prior)':<16}{prior:>12.5f}{0.0:>12.5f}")
    print(f"{'L_0 (t = 1)':<16}{mean[0]:>12.5f}{se[0]:>12.5f}")
    rows = []
    for a, b in _groups(T):
        ks = [k for k in range(a - 1, b) if cnt[k] > 0]  # steps drawn (all of them for ``full``)
        n_steps = b - a + 1
        value = sum(mean[k] for k in ks)  # per-step means are unbiased; undrawn steps are missing (KL ≥ 0)
        err = math.sqrt(sum((se[k] if math.isfinite(se[k]) else 0.0) ** 2 for k in ks))
        label = f"L_{a - 1} (t = {a})" if a == b else f"t = {a}..{b}"
        partial = len(ks) < n_steps
        drawn = len(ks) > 0  # a group no image drew has no estimate at all (not 0 ± 0)
        rows.append(
            {
                "t_from": a,
                "t_to": b,
                "bits_per_dim": value if drawn else None,
                "stderr": err if drawn else None,
                "steps_drawn": len(ks),
                "partial": partial,
            }
        )
        if not drawn:
            note = "  (not drawn by any image; use --estimator full)"
            print(f"{label:<16}{'—':>12}{'—':>12}{note}")
            continue
        note = f"  (partial: {len(ks)} of {n_steps} steps drawn; use --estimator full)" if partial else ""
        print(f"{label:<16}{value:>12.5f}{err:>12.5f}{note}")
    print(f"{'total':<16}{total:>12.5f}{se_img:>12.5f}   (stderr over images; estimator alone ± {se_est:.5f})")
    print(f"per-pixel categorical baseline on the same images: {baseline:.5f} bits/dim (exact NLL)")
    from .. import __version__
    from ..cite import citation
    from ..provenance import git_commit

    cite = citation(res, version=__version__, commit=git_commit())
    print()
    print(cite["line"])

    if args.json:
        atomic_write_json(
            args.json,
            {
                "checkpoint": str(path),
                "device": dev,
                "trained_on": ckpt.get("device"),
                "step": ckpt.get("step"),
                "weights": args.weights,
                "data": ds.name,
                "split": args.split,
                "n_images": res.N,
                "dim": res.dim,
                "levels": info["levels"],
                "config": cfg,
                "model": mspec.to_dict(),
                "estimator": est,
                "num_samples": res.num_samples,
                "n_evals": res.n_evals,
                "processes": dist.world,  # torchrun: images sharded across the ranks (per-image numbers unchanged)
                "n_pilot_evals": res.n_pilot_evals,
                "units": "bits/dim",
                "quantity": "negative-log-likelihood bound (>= -log p)",
                "total": total,
                "stderr_images": se_img,
                "stderr_estimator": se_est,
                "prior_L_T": prior,
                "decoder_L_0": mean[0],
                "decoder_L_0_stderr": _none(se[0]),
                "terms": [_none(m) for m in mean],
                "terms_stderr": [_none(s) for s in se],
                "terms_count": cnt,
                "groups": rows,
                "per_pixel_baseline": baseline,
                "citation": cite,
                "version": __version__,
                "git_commit": cite["git_commit"],
                # bits/dim, split order; dof: each image's Welch–Satterthwaite degrees of freedom (a 95% interval is
                # total ± t_dof·stderr; measured to cover for importance only, benchmarks/results/bound_coverage.txt)
                "per_image": {
                    "total": res.total.tolist(),
                    "stderr": res.stderr.tolist(),
                    "dof": [d if math.isfinite(d) else None for d in res.dof.tolist()] if res.dof is not None else None,
                },
            },
        )
    return 0


def _diffusers_source(args: argparse.Namespace, device):
    """(path, ε-model, checkpoint-like description, dataset) for ``--diffusers DIR`` (elbo_lab.diffusers_io)."""
    from ..data import load_data
    from ..diffusers_io import load_diffusers

    if args.data is None:
        raise ElboLabError("--diffusers needs --data digits|FILE (the images to score)")
    dm = load_diffusers(args.diffusers, device)
    ds = load_data(args.data, levels=args.levels)
    if tuple(ds.shape) != dm.shape:
        raise DataError(f"{args.data}: examples of shape {ds.shape}, but the U-Net takes {dm.shape}")
    model = dm.eps_model  # has .schedule like the checkpoints' EpsModel
    mspec = dm.spec(ds.levels)  # the model being bounded (prediction type, variance, clipping)
    cfg = {"variance": dm.variance, "param": dm.prediction_type, "T": dm.schedule.T, "diffusers": dm.describe_dict()}
    info = {"levels": ds.levels, "shape": list(ds.shape), "spec": args.data}
    desc = {"config": cfg, "data": info, "step": None, "device": None, "describe": dm.describe(), "model_spec": mspec}
    return dm.path, model, desc, ds


def _none(v: float):
    return v if math.isfinite(v) else None

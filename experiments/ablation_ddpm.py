"""Ablation: what moves a DDPM's test bound on digits (loss × variance × schedule × output parameterization),
beside the exact per-pixel categorical baseline and the VAE's IWAE bound.

Every configuration trains with the same budget (``--steps`` per run: equal work whatever the machine's load; or
``--minutes``), keeps the EMA weights with the best held-out bound, and is scored on the 360 test images with the
engine's importance-sampled bound (an NLL bound ≥ −log p, bits/dim, with its standard error over images).
Results are cached per configuration in ``OUT/<name>/result.json`` (rerunning skips finished ones) and the table
is written to ``OUT/table.md`` and ``OUT/table.json`` (atomically), each row with the device it ran on.

    .venv/bin/python experiments/ablation_ddpm.py --steps 150                  # the table in docs/ddpm.md
    .venv/bin/python experiments/ablation_ddpm.py --only default --minutes 10  # the headline run
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from elbo_lab.baselines import PerPixelCategorical
from elbo_lab.bound import variational_bound
from elbo_lab.data import load_data
from elbo_lab.ddpm import TrainConfig, load_model, train
from elbo_lab.ddpm.model import device_description, resolve_device
from elbo_lab.io import atomic_write_json, atomic_write_text

# name -> TrainConfig overrides (the rest: TrainConfig defaults)
CONFIGS = {
    # the reference point: ε output, L_simple, fixed variances, linear schedule
    "eps-simple-beta-linear": dict(param="eps", loss="simple", variance="beta", schedule="linear"),
    "eps-simple-posterior-linear": dict(param="eps", loss="simple", variance="posterior", schedule="linear"),
    "eps-simple-posterior-cosine": dict(param="eps", loss="simple", variance="posterior", schedule="cosine"),
    "eps-hybrid-learned-cosine": dict(param="eps", loss="hybrid", variance="learned", schedule="cosine"),
    "eps-vlb-learned-cosine": dict(param="eps", loss="vlb", variance="learned", schedule="cosine"),
    # categorical-x0 output head (elbo_lab.ddpm.model): the low-noise steps are exact
    "cat-simple-posterior-linear": dict(param="categorical", loss="simple", variance="posterior", schedule="linear"),
    "cat-simple-posterior-cosine": dict(param="categorical", loss="simple", variance="posterior", schedule="cosine"),
    "cat-hybrid-learned-linear": dict(param="categorical", loss="hybrid", variance="learned", schedule="linear"),
    "cat-vlb-learned-cosine": dict(param="categorical", loss="vlb", variance="learned", schedule="cosine"),
    "default": {},  # categorical, hybrid, learned, cosine, T = 1000 (TrainConfig defaults)
}


def test_bound(run_dir: Path, x: torch.Tensor, device, estimator: str, budget: int, seed: int) -> dict:
    model, ckpt = load_model(run_dir / "best.pt", device)
    res = variational_bound(
        model,
        model.schedule,
        x.to(device, torch.float64),
        estimator=estimator,
        num_samples=None if estimator == "full" else budget,
        variance=ckpt["config"]["variance"],
        levels=ckpt["data"]["levels"],
        generator=seed,
        model_dtype=torch.float64,
        bits_per_dim=True,
    )
    k = torch.arange(model.schedule.T)
    early = res.terms[:, (k >= 1) & (k <= 9)]  # L_1..L_9: paper steps t = 2..10
    return {
        "test_bpd": res.mean(),
        "test_stderr": res.mean_stderr("images"),
        "test_stderr_estimator": res.mean_stderr("estimator"),
        "n_evals": res.n_evals,
        "L0_bpd": float(res.decoder.nanmean()),
        "steps_2_10_bpd": float(early.nanmean(0).nansum()),
        "heldout_bpd": ckpt["heldout_bpd"],
        "best_step": ckpt["step"],
    }


def vae_row(vae_dir: Path) -> dict | None:
    try:
        m = json.loads((vae_dir / "metrics.json").read_text())
        iw = m["bounds"]["test"]["iwae"]
        return {
            "bpd": iw["bits_per_dim"],
            "stderr": iw["bits_per_dim_stderr"],
            "k": iw.get("k"),
            "parameters": m.get("parameters"),
        }
    except (OSError, KeyError, ValueError):
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    budget = ap.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, default=150, help="optimizer steps per configuration (default 150)")
    budget.add_argument("--minutes", type=float, default=None, help="wall-clock minutes per configuration instead")
    ap.add_argument("--only", nargs="*", default=None, metavar="NAME", help=f"subset of: {', '.join(CONFIGS)}")
    ap.add_argument("--out", default="runs/ablation_ddpm", help="output directory (default runs/ablation_ddpm)")
    ap.add_argument("--tag", default="", help="suffix of the run directories (e.g. the budget)")
    ap.add_argument("--estimator", default="importance", choices=("importance", "stratified", "full"))
    ap.add_argument("--budget", type=int, default=32, help="timesteps per test image (default 32)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--vae", default="runs/vae", help="a `train vae` run directory for the VAE row")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--rerun", action="store_true", help="retrain configurations that have a result")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    out = Path(args.out)
    names = args.only or list(CONFIGS)
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        ap.error(f"unknown configuration {unknown[0]!r}")
    ds = load_data("digits")
    budget_kw = {"minutes": args.minutes} if args.minutes else {"steps": args.steps}
    tag = args.tag or (f"{args.minutes:g}min" if args.minutes else f"{args.steps}steps")

    for name in names:
        run = out / f"{name}-{tag}"
        if (run / "result.json").is_file() and not args.rerun:
            continue
        cfg = TrainConfig(**{**CONFIGS[name], **budget_kw}, device=args.device, eval_at_start=False, eval_every=10**9)
        t0 = time.perf_counter()
        summary = train(cfg, run, progress=False, log=lambda *a: None)
        wall = time.perf_counter() - t0
        t1 = time.perf_counter()
        res = test_bound(run, ds.test, device, args.estimator, args.budget, seed=0)
        res.update(
            name=name,
            config=CONFIGS[name],
            steps=summary["step"],
            train_wall_s=round(wall, 1),
            eval_wall_s=round(time.perf_counter() - t1, 1),
            device=summary["device"],
            n_params=summary["n_params"],
            estimator=args.estimator,
            budget=args.budget,
        )
        atomic_write_json(run / "result.json", res)
        print(
            f"{name:32s} {res['test_bpd']:.4f} ± {res['test_stderr']:.4f} bits/dim  ({res['steps']} steps, "
            f"{wall:.0f} s, {res['device']})",
            flush=True,
        )

    rows = []
    for name in CONFIGS:
        f = out / f"{name}-{tag}" / "result.json"
        if f.is_file():
            rows.append(json.loads(f.read_text()))
    pp = PerPixelCategorical.fit(ds.train, ds.levels)
    baseline = float(-pp.log_prob(ds.test).mean() / (ds.dim * math.log(2.0)))
    vae = vae_row(Path(args.vae))
    lines = [
        f"DDPM ablation on digits (test split, 360 images; {args.estimator} estimator, {args.budget} steps/image; "
        f"budget {tag} per run; evaluated on {device_description(device)})",
        "",
        "| configuration | param | loss | variance | schedule | steps | train s | test bits/dim | L_0 | t=2..10 "
        "| device |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    d = TrainConfig()
    for r in sorted(rows, key=lambda r: r["test_bpd"]):
        c = {**{k: getattr(d, k) for k in ("param", "loss", "variance", "schedule")}, **r["config"]}
        lines.append(
            f"| {r['name']} | {c['param']} | {c['loss']} | {c['variance']} | {c['schedule']} | {r['steps']} | "
            f"{r['train_wall_s']:.0f} | {r['test_bpd']:.3f} ± {r['test_stderr']:.3f} | {r['L0_bpd']:.3f} | "
            f"{r['steps_2_10_bpd']:.3f} | {r['device']} |"
        )
    lines.append(f"| per-pixel categorical (exact NLL) | | | | | | | {baseline:.3f} | | | |")
    if vae:
        lines.append(
            f"| VAE (IWAE k={vae['k']}, {args.vae}) | | | | | | | {vae['bpd']:.3f} ± {vae['stderr']:.3f} | | | |"
        )
    else:
        lines.append(f"| VAE | | | | | | | n/a (no {args.vae}/metrics.json: run `elbo-lab train vae`) | | | |")
    text = "\n".join(lines) + "\n"
    atomic_write_text(out / f"table-{tag}.md", text)
    atomic_write_json(out / f"table-{tag}.json", {"rows": rows, "per_pixel_baseline": baseline, "vae": vae})
    print(text)


if __name__ == "__main__":
    main()

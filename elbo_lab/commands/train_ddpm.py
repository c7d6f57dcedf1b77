"""``elbo-lab train ddpm``: train a DDPM ε-model (U-Net for images, MLP for vectors) on digits or a user's array,
log L_simple and the held-out bound (bits/dim) to ``DIR/metrics.json``, keep ``DIR/best.pt`` (EMA weights with the
best held-out bound) and ``DIR/last.pt`` (exact resume).  Runs on the GPU when there is one (``--device auto``).

Options not given on ``--resume`` are taken from the checkpoint; options given must agree with it, except the
budget (``--steps``/``--minutes``) and ``--device``.  See :mod:`elbo_lab.ddpm.train` for the losses and
``experiments/ablation_ddpm.py`` for how the defaults were chosen.
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from ..errors import CheckpointError, ElboLabError
from ..options import MAX_T, arg

HELP = "train a DDPM on digits or an array file (L_simple, L_vlb or hybrid; EMA; held-out bound; exact resume)"

# option name -> TrainConfig field
_OPTS = {
    "data": "data",
    "levels": "levels",
    "loss": "loss",
    "variance": "variance",
    "param": "param",
    "schedule": "schedule",
    "T": "T",
    "beta_start": "beta_start",
    "beta_end": "beta_end",
    "steps": "steps",
    "minutes": "minutes",
    "device": "device",
    "seed": "seed",
    "batch_size": "batch_size",
    "lr": "lr",
    "weight_decay": "weight_decay",
    "ema_decay": "ema_decay",
    "hybrid_lambda": "hybrid_lambda",
    "sampler": "sampler",
    "base_channels": "base_channels",
    "num_res_blocks": "num_res_blocks",
    "dropout": "dropout",
    "eval_every": "eval_every",
    "val_samples": "val_samples",
}
_RESUMABLE = ("steps", "minutes", "device")
DEFAULT_MINUTES = 10.0


def configure(p: argparse.ArgumentParser) -> None:
    from ..ddpm.train import TrainConfig

    d = TrainConfig()
    p.add_argument("--data", default=None, metavar="digits|FILE", help="'digits' (default) or a .npy/.npz array")
    p.add_argument(
        "--levels", type=arg("levels"), default=None, metavar="K", help="grey levels of a FILE (default: inferred)"
    )
    p.add_argument("--loss", choices=("simple", "vlb", "hybrid"), default=None, help=f"objective (default {d.loss})")
    p.add_argument(
        "--variance",
        choices=("posterior", "beta", "learned"),
        default=None,
        help=f"reverse variance σ_t²: β̃_t, β_t or learned (default {d.variance})",
    )
    p.add_argument(
        "--param",
        choices=("eps", "categorical"),
        default=None,
        help=f"network output: ε̂, or K logits per value turned into ε̂ (default {d.param})",
    )
    p.add_argument("--schedule", choices=("linear", "cosine"), default=None, help=f"noise schedule ({d.schedule})")
    p.add_argument(
        "--T", type=arg("T"), default=None, metavar="N", help=f"diffusion steps, 2..{MAX_T:,} (default {d.T})"
    )
    p.add_argument(
        "--beta-start", type=arg("beta_start"), default=None, help=f"linear schedule β_1 at T=1000 ({d.beta_start})"
    )
    p.add_argument(
        "--beta-end", type=arg("beta_end"), default=None, help=f"linear schedule β_T at T=1000 ({d.beta_end})"
    )
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=arg("steps"), default=None, metavar="N", help="total optimizer steps")
    budget.add_argument(
        "--minutes",
        type=arg("minutes"),
        default=None,
        metavar="M",
        help=f"total wall-clock minutes, evaluations included (default {DEFAULT_MINUTES:g})",
    )
    p.add_argument("--device", default=None, metavar="auto|cpu|cuda", help="where to train (default auto)")
    p.add_argument("--out", default="runs/ddpm", metavar="DIR", help="checkpoints and metrics.json (runs/ddpm)")
    p.add_argument("--resume", action="store_true", help="continue the run in DIR exactly where it stopped")
    p.add_argument(
        "--seed", type=arg("seed"), default=None, metavar="S", help="seed of every random choice (default 0)"
    )
    p.add_argument(
        "--batch-size", type=arg("batch_size"), default=None, help=f"minibatch size (default {d.batch_size})"
    )
    p.add_argument("--lr", type=arg("lr"), default=None, help=f"AdamW learning rate (default {d.lr:g})")
    p.add_argument(
        "--weight-decay",
        type=arg("weight_decay"),
        default=None,
        help=f"AdamW weight decay (default {d.weight_decay:g})",
    )
    p.add_argument("--ema-decay", type=arg("ema_decay"), default=None, help=f"EMA decay (default {d.ema_decay})")
    p.add_argument(
        "--hybrid-lambda", type=arg("hybrid_lambda"), default=None, help=f"λ of the hybrid loss ({d.hybrid_lambda})"
    )
    p.add_argument(
        "--sampler",
        choices=("auto", "uniform", "importance"),
        default=None,
        help="training timestep sampler (auto: importance for vlb, else uniform)",
    )
    p.add_argument(
        "--base-channels", type=arg("base_channels"), default=None, help=f"U-Net width (default {d.base_channels})"
    )
    p.add_argument(
        "--num-res-blocks",
        type=arg("num_res_blocks"),
        default=None,
        help=f"residual blocks per level ({d.num_res_blocks})",
    )
    p.add_argument(
        "--dropout", type=arg("dropout"), default=None, help=f"dropout in residual blocks (default {d.dropout})"
    )
    p.add_argument(
        "--eval-every",
        type=arg("eval_every"),
        default=None,
        metavar="N",
        help=f"steps between held-out bound evaluations (default {d.eval_every})",
    )
    p.add_argument(
        "--val-samples",
        type=arg("val_samples"),
        default=None,
        metavar="M",
        help=f"timesteps per held-out image for the importance estimator (default {d.val_samples})",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def resolve_config(args: argparse.Namespace, stored: dict | None):
    """explicit option > checkpoint value (on --resume) > default; an explicit value must match the checkpoint."""
    from ..ddpm.train import TrainConfig

    values = {}
    for opt, key in _OPTS.items():
        given = getattr(args, opt)
        if stored is not None and key in stored:
            if given is not None and given != stored[key] and key not in _RESUMABLE:
                raise CheckpointError(f"the run in {args.out} has {key}={stored[key]!r}, not {given!r}")
            values[key] = stored[key] if given is None else given
        elif given is not None:
            values[key] = given
    if stored is not None:
        for f in fields(TrainConfig):
            if f.name not in values and f.name in stored and f.name not in ("steps", "minutes"):
                values[f.name] = stored[f.name]
        if args.steps is not None or args.minutes is not None:  # a new budget replaces the stored one
            values["steps"], values["minutes"] = args.steps, args.minutes
    if values.get("steps") is None and values.get("minutes") is None:
        values["minutes"] = DEFAULT_MINUTES
    return TrainConfig(**values)


def main(args: argparse.Namespace) -> int:
    from ..ddpm.checkpoint import load_checkpoint
    from ..ddpm.train import train

    out = Path(args.out)
    stored = None
    if args.resume:
        if not (out / "last.pt").is_file():
            raise CheckpointError(f"--resume: no checkpoint {out / 'last.pt'}")
        stored = load_checkpoint(out / "last.pt")["config"]
    cfg = resolve_config(args, stored)
    if cfg.device not in ("auto", "cpu") and not cfg.device.startswith("cuda"):
        raise ElboLabError(f"unknown device {cfg.device!r} (expected auto, cpu or cuda)")
    from ..distributed import setup

    dist, _ = setup(cfg.device)  # torchrun: join the job (rank r on cuda:LOCAL_RANK or the CPU)
    try:
        summary = train(cfg, out, resume=args.resume, progress=not args.no_progress, dist=dist)
    except BaseException:
        dist.close(sync=False)
        raise
    dist.close()
    if not dist.is_main:
        return 0
    best = summary["best"]
    print(f"device: {summary['device']}")
    print(
        f"trained {summary['step']} steps in {summary['elapsed_s']:.0f} s ({summary['n_params']:,} parameters, "
        f"{cfg.loss} loss, {cfg.variance} variance, {cfg.param} output, {summary['schedule']})"
    )
    print(
        f"best held-out bound {best['heldout_bpd']:.4f} ± {best['heldout_stderr']:.4f} bits/dim at step "
        f"{best['step']} (EMA weights in {out / 'best.pt'}); metrics in {out / 'metrics.json'}"
    )
    if dist.enabled:
        d = summary["distributed"]
        print(
            f"DistributedDataParallel: {d['world_size']} processes ({d['backend']}), {d['per_rank_batch']} images "
            f"per rank per step; weights identical on every rank (sha256 {d['weights_sha256_per_rank'][0][:16]})"
        )
    print(f"test bound: elbo-lab bound {out / 'best.pt'}")
    return 0

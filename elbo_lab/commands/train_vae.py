"""``elbo-lab train vae``: train the small VAE on digits or a user's array, checkpoint each epoch, resume exactly,
and write ``DIR/metrics.json`` (ELBO with analytic and sampled KL, IWAE_k, in nats and bits/dim with standard
errors, on the fit, validation and test images, beside the uniform and per-pixel baselines).

Options not given on ``--resume`` are taken from the checkpoint; options given must agree with it (except
``--epochs``, ``--patience``, ``--iwae-k``, ``--eval-samples``).  See :mod:`elbo_lab.vae.train`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import CheckpointError, DataError, ElboLabError
from ..options import arg

HELP = "train the small VAE (categorical pixels) and report its ELBO and IWAE bounds in bits/dim"

_MODEL_OPTS = {"latent": "latent", "hidden": "hidden", "depth": "depth", "likelihood": "likelihood"}
_TRAIN_OPTS = {
    "epochs": "epochs",
    "batch_size": "batch_size",
    "lr": "lr",
    "patience": "patience",
    "iwae_k": "iwae_k",
    "eval_samples": "eval_samples",
    "seed": "seed",
}


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=None, metavar="digits|FILE", help="'digits' (default) or a .npy/.npz array")
    p.add_argument(
        "--levels", type=arg("levels"), default=None, metavar="K", help="grey levels of a FILE (default: inferred)"
    )
    p.add_argument("--epochs", type=arg("epochs"), default=None, metavar="N", help="maximum epochs (default 100)")
    p.add_argument("--out", default="runs/vae", metavar="DIR", help="checkpoint and metrics.json (default runs/vae)")
    p.add_argument("--resume", action="store_true", help="continue the checkpoint in DIR")
    p.add_argument(
        "--seed", type=arg("seed"), default=None, metavar="S", help="seed of every random choice (default 0)"
    )
    p.add_argument("--latent", type=arg("latent"), default=None, metavar="L", help="latent dimensions (default 16)")
    p.add_argument(
        "--hidden", type=arg("hidden"), default=None, metavar="H", help="hidden units per layer (default 128)"
    )
    p.add_argument("--depth", type=arg("depth"), default=None, help="hidden layers per network (default 2)")
    p.add_argument("--likelihood", choices=LIKELIHOODS, default=None, help="pixel likelihood (default categorical)")
    p.add_argument("--batch-size", type=arg("batch_size"), default=None, help="minibatch size (default 64)")
    p.add_argument("--lr", type=arg("lr"), default=None, help="Adam learning rate (default 1e-3)")
    p.add_argument(
        "--patience", type=arg("patience"), default=None, help="early-stopping patience in epochs (default 10)"
    )
    p.add_argument(
        "--iwae-k", type=arg("iwae_k"), default=None, metavar="K", help="importance samples for IWAE (default 1000)"
    )
    p.add_argument(
        "--eval-samples", type=arg("eval_samples"), default=None, metavar="S", help="draws per image for ELBOs (16)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _resolve(args, stored: dict | None, names: dict, defaults: dict, what: str) -> dict:
    """explicit option > checkpoint value (on --resume) > default; an explicit value must match the checkpoint."""
    out = {}
    for opt, key in names.items():
        given = getattr(args, opt)
        if stored is not None and key in stored:
            if given is not None and given != stored[key] and key not in _RESUMABLE:
                raise CheckpointError(f"the checkpoint in {args.out} has {what} {key}={stored[key]!r}, not {given!r}")
            out[key] = stored[key] if given is None else given
        else:
            out[key] = defaults[key] if given is None else given
    return out


_RESUMABLE = ("epochs", "patience", "iwae_k", "eval_samples")  # = TrainConfig.RESUMABLE (checked again there)
LIKELIHOODS = ("categorical", "discretized_gaussian")  # = vae.model.LIKELIHOODS; no torch import at parse time
DEFAULT_MODEL = {"latent": 16, "hidden": 128, "depth": 2, "likelihood": "categorical"}


def main(args: argparse.Namespace) -> int:
    from ..data import load_data
    from ..vae.model import VAEConfig
    from ..vae.train import CHECKPOINT_NAME, TrainConfig, load_checkpoint, train_vae

    out = Path(args.out)
    stored = load_checkpoint(out / CHECKPOINT_NAME) if args.resume else None
    spec, levels = args.data, args.levels
    if stored is not None and spec is None:  # the checkpoint's data, unless other data are named
        spec = stored["data"].get("spec", "digits")
        levels = levels if levels is not None else stored["data"].get("levels")
    spec = spec or "digits"
    if levels is not None and levels < 2:
        raise DataError(f"--levels must be >= 2, got {levels}")
    if spec == "digits" and args.levels is not None and args.levels != 17:
        raise DataError(f"digits have 17 grey levels, not --levels {args.levels}")
    dataset = load_data(spec, levels=levels, seed=0)

    try:
        model_kw = _resolve(args, stored and stored["model_config"], _MODEL_OPTS, DEFAULT_MODEL, "model option")
        train_defaults = TrainConfig().to_dict()
        train_kw = _resolve(args, stored and stored["train_config"], _TRAIN_OPTS, train_defaults, "training option")
        train_cfg = TrainConfig(**{**train_defaults, **(stored["train_config"] if stored else {}), **train_kw})
        model_cfg = VAEConfig(shape=dataset.shape, levels=dataset.levels, **model_kw)
    except ValueError as exc:
        if isinstance(exc, ElboLabError):
            raise
        raise ElboLabError(str(exc)) from None
    print(dataset.describe(), flush=True)
    train_vae(
        dataset,
        model_cfg,
        train_cfg,
        out,
        resume=args.resume,
        progress=not args.no_progress,
        data_spec=spec,
    )
    print(f"wrote {out / CHECKPOINT_NAME} and {out / 'metrics.json'}")
    return 0

"""``elbo-lab sample CHECKPOINT``: ancestral sampling (E11) from a trained DDPM, saved as a PNG grid (atomically)."""

from __future__ import annotations

import argparse

from ..errors import ElboLabError
from ..options import arg

HELP = "draw samples from a trained DDPM by ancestral sampling (E11) and save a PNG grid"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "checkpoint", metavar="CHECKPOINT", help="a DDPM checkpoint (best.pt / last.pt) or its run directory"
    )
    p.add_argument("--n", type=arg("sample_n"), default=64, metavar="N", help="number of samples (default 64)")
    p.add_argument("--out", default="samples.png", metavar="FILE.png", help="output image (default samples.png)")
    p.add_argument("--seed", type=arg("seed"), default=0, metavar="S", help="seed of the chain (default 0)")
    p.add_argument("--weights", choices=("ema", "model"), default="ema", help="EMA (default) or raw weights")
    p.add_argument("--device", default="auto", metavar="auto|cpu|cuda", help="where to sample (default auto)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    import torch

    from ..ddpm.checkpoint import load_model, resolve_checkpoint
    from ..ddpm.model import device_description, resolve_device
    from ..ddpm.sampling import ancestral_sample, save_grid
    from ..io import check_output_file

    if not 1 <= args.n <= 4096:
        raise ElboLabError(f"--n must lie in 1..4096, got {args.n}")
    if not args.out.lower().endswith(".png"):
        raise ElboLabError(f"--out must be a .png file, got {args.out!r}")
    check_output_file(args.out, "--out")  # before the sampling
    device = resolve_device(args.device)
    path = resolve_checkpoint(args.checkpoint)
    model, ckpt = load_model(path, device, weights=args.weights)
    info, cfg = ckpt["data"], ckpt["config"]
    gen = torch.Generator(device=device).manual_seed(args.seed)
    x = ancestral_sample(
        model, tuple(info["shape"]), args.n, variance=cfg["variance"], generator=gen, progress=not args.no_progress
    )
    if not bool(torch.isfinite(x).all()):
        raise ElboLabError(f"{path}: the sampling chain produced NaN or Inf (the model's outputs are not finite)")
    dev = device_description(device)
    title = f"{args.n} samples, step {ckpt.get('step')}, T={cfg['T']}, {cfg['variance']} variance ({dev})"
    save_grid(x, args.out, levels=info["levels"], title=title)
    print(f"device: {dev}")
    print(f"wrote {args.n} samples to {args.out} (checkpoint {path}, T = {cfg['T']}, seed {args.seed})")
    return 0

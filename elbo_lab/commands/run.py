"""``elbo-lab run [--quick | --full] [--out DIR] [--device auto|cpu|cuda] [--seed S] [--minutes M] [--threads N]``:
the main job.  Budgets are step counts, so the same command and seed give the same results.json numbers whatever
the machine's load; ``--minutes`` trades that for a wall-clock DDPM budget."""

from __future__ import annotations

import argparse

from ..options import arg

HELP = "derive, check, train the VAE and the DDPM on digits, and write the report with its figures"


def configure(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--quick", dest="mode", action="store_const", const="quick", help="about 5 minutes on a 2-core CPU (default)"
    )
    g.add_argument("--full", dest="mode", action="store_const", const="full", help="the longer budget (a GPU)")
    p.set_defaults(mode="quick")
    p.add_argument("--out", default="results", metavar="DIR", help="output directory (default results/)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where to train the DDPM")
    p.add_argument("--seed", type=arg("seed"), default=0, metavar="S")
    p.add_argument(
        "--minutes",
        type=arg("minutes"),
        default=None,
        metavar="M",
        help="train the DDPM for M wall-clock minutes instead of the mode's step count (not reproducible under load)",
    )


def main(args: argparse.Namespace) -> int:
    from ..run import run_pipeline

    return run_pipeline(args.out, mode=args.mode, seed=args.seed, device=args.device, ddpm_minutes=args.minutes)

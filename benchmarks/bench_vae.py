"""Benchmark of the VAE side (prints its figures; not a test).

(a) Wall time of the default full training run on digits (``train_vae`` with the ``elbo-lab train vae``
    defaults: 16 latents, 128 hidden units, ≤ 100 epochs with early stopping, then the final evaluation of
    every estimator on the fit, validation and test images, IWAE k = 1000).  Target: ≤ 2 minutes on the 2-core CPU.
(b) Wall time of IWAE with k = 1000 over the 360-image test split, on the trained model.  Target: ≤ 30 s.
(c) Test bits/dim (NLL bounds, ± stderr) of the VAE beside the uniform (log₂ 17 = 4.09) and per-pixel
    categorical baselines, train vs test (overfitting), and the per-draw variance of both ELBO estimators.

The machine is shared: the load average (``os.getloadavg``) is printed before and after; timings taken under
load are pessimistic.  ``--threads N`` sets torch's intra-op threads for this script (default: torch's own).

Run:  .venv/bin/python benchmarks/bench_vae.py [--threads 1] [--epochs N]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from elbo_lab.data import load_digits
from elbo_lab.vae import VAEConfig, estimate
from elbo_lab.vae.train import TrainConfig, load_vae, summary_table, train_vae


def load() -> str:
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; {load()}")

    d = load_digits()
    mcfg = VAEConfig(d.shape, d.levels, latent=16, hidden=128, depth=2)
    cfg = TrainConfig(epochs=args.epochs, seed=args.seed)
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        m = train_vae(d, mcfg, cfg, out, progress=False, log=None)
        wall = time.perf_counter() - t0
        model = load_vae(f"{out}/checkpoint.pt")
    model.eval()
    sec = m["seconds"]
    print(
        f"(a) default training run: {wall:.1f} s wall ({sec['train_this_session']:.1f} s training, "
        f"{m['epochs_run']} epochs, best {m['best_epoch']}; {sec['evaluate']:.1f} s final evaluation)  "
        f"target ≤ 120 s  [{load()}]"
    )

    t0 = time.perf_counter()
    est, _ = estimate(model, d.test, "iwae", k=1000, generator=torch.Generator().manual_seed(123))
    t_iwae = time.perf_counter() - t0
    print(f"(b) IWAE k=1000 over {len(d.test)} test images: {t_iwae:.1f} s (target ≤ 30 s); {est}  [{load()}]")

    print("(c) bits/dim (negative-log-likelihood bounds; baselines exact):")
    print(summary_table(m))
    test = m["bounds"]["test"]
    pp, un = m["baselines"]["per_pixel"]["test"]["bits_per_dim"], m["baselines"]["uniform"]["test"]["bits_per_dim"]
    best = test["iwae"]["bits_per_dim"]
    print(
        f"test: VAE IWAE {best:.4f} vs per-pixel {pp:.4f} (alpha {m['baselines']['per_pixel']['alpha']}) "
        f"vs uniform {un:.4f}: beats both = {best < pp < un}"
    )
    for split, b in m["bounds"].items():
        v = b["per_draw_variance_nats2"]
        print(
            f"per-draw ELBO variance ({split}): analytic KL {v['analytic']:.3f}, sampled KL {v['sampled_kl']:.3f} nats²"
        )


if __name__ == "__main__":
    main()

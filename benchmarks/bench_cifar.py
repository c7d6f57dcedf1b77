"""Network evaluations per second of the bound evaluator against bare forward passes at CIFAR-10's shape
(3×32×32, 256 levels) -- prints the figure; not a test.

Both sides run in one process, interleaved (bare, bound, bare, bound, ...), ``--repeats`` times, and the median
of each is reported, so machine load affects both alike; times are CPU time of this process on the CPU
(``time.process_time``) and wall time with ``torch.cuda.synchronize`` on a GPU.

- bound: ``variational_bound(estimator="full")`` on ``--images`` synthetic 256-level images with ``--T`` steps,
  exactly as ``elbo-lab bound`` calls it (the model wrapped in :class:`elbo_lab.distributed.BatchInvariant`, ε
  keyed by (image, step), the discretized decoder, float64 bookkeeping).  Evaluations: images × T.
- bare: the same network on the same number of (x_t, k) rows in the same micro-batches (``--rows``), float64
  x_t handed to the ε-model as the engine does, nothing else.

Network: the project's U-Net at (3, 32, 32) from ``make_net_config`` (``--base-channels``, default 32, the training
default; ``--param eps`` (default) or ``categorical`` with 256 logits per value), random weights (the zero-init
output layer perturbed so the output is not trivially 0).  Target: ratio bare/bound throughput ≤ 1.10.

Run:  .venv/bin/python benchmarks/bench_cifar.py [--device cuda] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from elbo_lab.bound import ModelSpec, variational_bound
from elbo_lab.data import from_levels
from elbo_lab.ddpm.model import build_eps_model, device_description, make_net_config, make_schedule, resolve_device
from elbo_lab.distributed import BatchInvariant


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch threads on the CPU (default 1)")
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--T", type=int, default=32)
    ap.add_argument("--rows", type=int, default=None, help="rows per network call (default: 32 CPU, 256 GPU)")
    ap.add_argument("--base-channels", type=int, default=32)
    ap.add_argument("--param", choices=("eps", "categorical"), default="eps")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="2 images, T = 16, 3 repeats")
    a = ap.parse_args()
    if a.quick:
        a.images, a.T, a.repeats = 2, 16, 3
    torch.set_num_threads(a.threads)
    device = resolve_device(a.device)
    cuda = device.type == "cuda"
    rows = a.rows or (256 if cuda else 32)
    levels, shape = 256, (3, 32, 32)
    s = make_schedule("cosine", a.T)
    cfg = make_net_config(
        shape, T=a.T, learned_variance=True, out_per_channel=levels if a.param == "categorical" else 1,
        base_channels=a.base_channels,
    )  # fmt: skip
    model = build_eps_model(cfg, s, param=a.param, levels=levels, device=device, seed=0).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.net.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g).to(device))
    x0 = from_levels(torch.randint(0, levels, (a.images, *shape), generator=g).double(), levels).to(device)
    spec = ModelSpec(variance="learned", decoder="discretized", levels=levels, source="bench_cifar")
    inv = BatchInvariant(model, rows=rows)
    n_evals = a.images * a.T
    xt = torch.randn((n_evals, *shape), generator=g, dtype=torch.float64).to(device)
    kk = torch.arange(a.T).repeat(a.images).to(device)

    def clock() -> float:
        if cuda:
            torch.cuda.synchronize()
            return time.perf_counter()
        return time.process_time()

    def bare() -> float:
        t0 = clock()
        with torch.no_grad():
            for i in range(0, n_evals, rows):
                model(xt[i : i + rows], kk[i : i + rows])
        return clock() - t0

    def bound() -> float:
        t0 = clock()
        res = variational_bound(
            inv, s, x0, model=spec, estimator="full", generator=0, model_dtype=torch.float64, bits_per_dim=True
        )
        dt = clock() - t0
        assert res.n_evals == n_evals and bool(torch.isfinite(res.total).all())
        return dt

    bare(), bound()  # warm-up (allocator, kernels)
    tb, tv = [], []
    for _ in range(a.repeats):
        tb.append(bare())
        tv.append(bound())
    mb, mv = statistics.median(tb), statistics.median(tv)
    unit = "wall s (CUDA synchronised)" if cuda else "CPU s (process_time)"
    n_par = sum(p.numel() for p in model.net.parameters())
    print(f"device: {device_description(device)}; U-Net {a.param} head, {n_par:,} parameters, base {a.base_channels}")
    print(f"shape 3x32x32, 256 levels; {a.images} images x T = {a.T} = {n_evals} evaluations per run, {rows} rows/call")
    print(f"bare forward : {n_evals / mb:10.1f} evaluations/s  (median {mb:.3f} {unit} of {a.repeats})")
    print(f"bound (full) : {n_evals / mv:10.1f} evaluations/s  (median {mv:.3f} {unit} of {a.repeats})")
    print(f"ratio bare/bound throughput: {mv / mb:.3f}x  (target <= 1.10)")


if __name__ == "__main__":
    main()

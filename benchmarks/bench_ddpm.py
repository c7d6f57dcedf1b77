"""DDPM benchmarks that print their figures (ratios measured side by side, same process, same machine):

(a) estimator efficiency on a trained model: network evaluations ``--estimator importance`` (M steps per image)
    needs to reach the standard error of the test-mean bound that ``full`` (T steps per image) has, from the
    per-image variances measured on the same test images (see :func:`part_a`; target: ≥ 20× fewer).
(b) training-step overhead: one full training step (data, timestep sampler, float64 bound term, L_simple,
    backward, clipping, AdamW, EMA, sampler update) versus the bare forward + backward of the same ε-network on
    a batch of the same size, interleaved, median of the ratios (target: ≤ 1.10).
(c) with CUDA: training steps/s on the GPU (bf16 autocast) versus the CPU for the default model; skipped with a
    message without CUDA.

    .venv/bin/python benchmarks/bench_ddpm.py --part b
    .venv/bin/python benchmarks/bench_ddpm.py --part a --checkpoint runs/ddpm/best.pt --images 48
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from elbo_lab.bound import variational_bound
from elbo_lab.data import load_digits
from elbo_lab.ddpm import TrainConfig, load_model
from elbo_lab.ddpm.model import device_description
from elbo_lab.ddpm.train import Trainer


def part_a(checkpoint: str, n_images: int, ladder: list[int]) -> None:
    """Evaluations to reach the full estimator's standard error of the test-mean bound.

    Quantity: the dataset-mean bound as an estimate of E_{x_0}[L(x_0)]; its standard error is
    std(per-image totals)/√N (data spread + estimator noise), as in ``benchmarks/bench_bound.py``.  ``full`` on N
    images costs N·T evaluations; an estimator with per-image variance V_M needs N' = N·V_M/V_full images for the
    same standard error, i.e. N'·(evaluations per image) + pilot.  Ratio = N·T / that.
    """
    print(
        f"(a) importance vs full estimator on {checkpoint}, {n_images} test images, "
        f"{device_description(torch.device('cpu'))}"
    )
    model, ckpt = load_model(checkpoint, "cpu")
    x = load_digits().test[:n_images].to(torch.float64)
    kw = dict(
        variance=ckpt["config"]["variance"],
        levels=ckpt["data"]["levels"],
        model_dtype=torch.float64,
        bits_per_dim=True,
    )
    t = time.perf_counter()
    full = variational_bound(model, model.schedule, x, estimator="full", generator=1, **kw)
    t_full = time.perf_counter() - t
    v_full = float(full.total.var())
    print(
        f"    full:           {full.mean():.4f} ± {full.mean_stderr():.4f} bits/dim  per-image var {v_full:.5f}  "
        f"{full.n_evals:>8,} evals  {t_full:6.1f} s"
    )
    best = None
    for M in ladder:
        t = time.perf_counter()
        r = variational_bound(model, model.schedule, x, estimator="importance", num_samples=M, generator=2, **kw)
        dt = time.perf_counter() - t
        v = float(r.total.var())
        per_image = (r.n_evals - r.n_pilot_evals) / r.N
        needed = r.N * v / v_full * per_image + r.n_pilot_evals
        ratio = full.n_evals / needed
        # same images: the difference of the means is estimator noise only; a heavy-tailed importance estimator
        # shows up as a difference far outside its own (estimator) standard error -- such an M does not count
        z = (r.mean() - full.mean()) / max(r.mean_stderr("estimator"), 1e-12)
        ok = abs(z) < 3
        print(
            f"    importance M={M:<3d} {r.mean():.4f} ± {r.mean_stderr():.4f} bits/dim  per-image var {v:.5f}  "
            f"{r.n_evals:>8,} evals  {dt:6.1f} s  -> {needed:,.0f} evals for the full stderr: {ratio:.1f}× fewer; "
            f"mean − full = {z:+.1f} estimator stderr{'' if ok else '  (inconsistent: not counted)'}"
        )
        if ok:
            best = ratio if best is None else max(best, ratio)
    if best is None:
        print("    => no M on the ladder was consistent with the full estimator")
    else:
        print(
            f"    => importance reaches the full standard error with {best:.1f}× fewer network evaluations "
            f"(target ≥ 20×: {'met' if best >= 20 else 'NOT met'})"
        )


def _bare_step(net, opt, x, k) -> None:
    out = net(x, k)
    out = out[0] + out[1] if isinstance(out, tuple) else out
    loss = out.float().pow(2).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()


def part_b(reps: int, batch: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tr = Trainer(TrainConfig(steps=10**9, device="cpu", batch_size=batch), tmp, log=lambda *a: None)
        net = tr.model.net
        shadow = torch.optim.SGD(net.parameters(), lr=0.0)  # zero_grad only; the real optimizer is not touched
        x = tr.fit[:batch].clone()
        g = torch.Generator().manual_seed(0)
        ratios, t_steps, t_bares = [], [], []
        with tr.rng_scope():
            tr.model.train()
            for _ in range(3):  # warm-up
                tr.step()
                _bare_step(tr.model, shadow, x, torch.randint(0, tr.cfg.T, (batch,), generator=g))
            for _ in range(reps):
                k = torch.randint(0, tr.cfg.T, (batch,), generator=g)
                t0 = time.perf_counter()
                _bare_step(tr.model, shadow, x, k)
                t1 = time.perf_counter()
                tr.step()
                t2 = time.perf_counter()
                t_bares.append(t1 - t0)
                t_steps.append(t2 - t1)
                ratios.append((t2 - t1) / (t1 - t0))
    r = statistics.median(ratios)
    print(
        f"(b) training step vs bare forward+backward of the ε-network ({tr.n_params:,} parameters, batch {batch}, "
        f"{tr.device_name}, {reps} interleaved pairs)"
    )
    print(
        f"    bare fwd+bwd median {statistics.median(t_bares) * 1e3:.1f} ms, training step median "
        f"{statistics.median(t_steps) * 1e3:.1f} ms; median ratio {r:.3f} "
        f"(target ≤ 1.10: {'met' if r <= 1.10 else 'NOT met'})"
    )


def part_c(steps: int) -> None:
    if not torch.cuda.is_available():
        print("(c) GPU vs CPU: skipped (CUDA is not available on this machine)")
        return
    rates = {}
    for dev in ("cuda", "cpu"):
        with tempfile.TemporaryDirectory() as tmp:
            tr = Trainer(TrainConfig(steps=10**9, device=dev), tmp, log=lambda *a: None)
            with tr.rng_scope():
                tr.model.train()
                for _ in range(5):
                    tr.step()
                if dev == "cuda":
                    torch.cuda.synchronize()
                t = time.perf_counter()
                n = steps if dev == "cuda" else max(5, steps // 10)
                for _ in range(n):
                    tr.step()
                if dev == "cuda":
                    torch.cuda.synchronize()
                rates[dev] = n / (time.perf_counter() - t)
                print(f"    {device_description(tr.device)}: {rates[dev]:.2f} steps/s")
    print(f"(c) GPU vs CPU training: {rates['cuda'] / rates['cpu']:.1f}× more steps/s on the GPU")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=("a", "b", "c", "all"), default="all")
    ap.add_argument("--checkpoint", default="runs/ddpm/best.pt", help="trained DDPM for part (a)")
    ap.add_argument("--images", type=int, default=48, help="test images for part (a) (full costs images × T)")
    ap.add_argument("--ladder", type=int, nargs="*", default=[8, 16, 32, 50], help="importance steps per image")
    ap.add_argument("--reps", type=int, default=20, help="interleaved pairs for part (b)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--gpu-steps", type=int, default=200)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.part in ("b", "all"):
        part_b(args.reps, args.batch)
    if args.part in ("a", "all"):
        part_a(args.checkpoint, args.images, args.ladder)
    if args.part in ("c", "all"):
        part_c(args.gpu_steps)


if __name__ == "__main__":
    main()

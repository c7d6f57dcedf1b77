"""Benchmarks of the bound evaluator (prints its figures; not a test).

(a) Bookkeeping overhead of ``variational_bound(estimator="full")``: wall time of the full estimator divided by
    the wall time of the bare network forward passes it needs -- the same (x_t, k) batches, same chunk size, no
    bookkeeping -- interleaved runs, median of ``--repeats``.  Network: the project's U-Net (``elbo_lab.nets``,
    default config, random weights, float32, eval mode) on digits-shaped inputs (1, 8, 8).  Target: ≤ 1.10.
    A second line gives the same ratio for a near-free model (the Gaussian oracle's MMSE ε), i.e. the
    bookkeeping cost per evaluation in absolute terms.

(b) Network evaluations the importance-sampled estimator needs to reach the standard error of ``full``.
    Quantity: the dataset-mean bound, as an estimate of the expected bound E_{x_0}[L(x_0)] over the data
    distribution; its standard error is std(per-image totals)/√N (``BoundResult.mean_stderr()``), which
    includes the data spread and the estimator's noise.  ``full`` on N images costs N·T evaluations; a sampled
    estimator with M steps per image and per-image variance V_M needs N' = V_M / se_full² images (fresh data
    from the oracle), i.e. N'·(M + 2) evaluations (M sampled steps + two decoder draws per image; + the pilot).
    Model: the Gaussian oracle (``elbo_lab.oracles.gaussian``, D-dimensional N(m, S), MMSE ε-predictor,
    continuous Gaussian decoder), whose exact expected bound is printed alongside.  Target: ≥ 20× fewer evaluations.

Run:  .venv/bin/python benchmarks/bench_bound.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from elbo_lab.bound import estimate_proposal, pilot_steps, variational_bound
from elbo_lab.data import load_digits
from elbo_lab.diffusion import q_sample
from elbo_lab.nets import UNetConfig, UNetEps
from elbo_lab.oracles.gaussian import GaussianData
from elbo_lab.schedule import NoiseSchedule


def _bare_batches(x0: torch.Tensor, T: int, chunk: int, schedule: NoiseSchedule, seed: int = 0):
    """The (x_t, k) batches the full estimator feeds the network (image-major pairs, chunks of ``chunk``)."""
    g = torch.Generator().manual_seed(seed)
    N, batches = x0.shape[0], []
    for start in range(0, N * T, chunk):
        i = torch.arange(start, min(start + chunk, N * T))
        n, k = i // T, i % T
        noise = torch.randn((len(i), *x0.shape[1:]), generator=g, dtype=torch.float64)
        batches.append((q_sample(schedule, x0[n].double(), k, noise).to(x0.dtype), k))
    return batches


def overhead(model, x0, schedule, chunk, repeats, **kw) -> tuple[float, float, float]:
    """(median ratio full / bare, median bare seconds, median full seconds), runs interleaved."""
    batches = _bare_batches(x0, schedule.T, chunk, schedule)
    bare, full = [], []
    with torch.no_grad():
        model(*batches[0])  # warm-up
        for _ in range(repeats):
            t0 = time.perf_counter()
            for x, k in batches:
                model(x, k)
            bare.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            variational_bound(model, schedule, x0, estimator="full", chunk_size=chunk, **kw)
            full.append(time.perf_counter() - t0)
    ratios = [f / b for f, b in zip(full, bare)]
    return statistics.median(ratios), statistics.median(bare), statistics.median(full)


def evals_to_match_full(oracle: GaussianData, schedule, n_full: int, n_sampled: int, seed: int = 0) -> None:
    model = oracle.optimal_eps(schedule)
    T = schedule.T
    g = torch.Generator().manual_seed(seed)
    kw = dict(decoder="gaussian", variance="posterior", chunk_size=4096)
    exact = float(oracle.expected_bound(schedule, "posterior").total)
    t0 = time.perf_counter()
    full = variational_bound(model, schedule, oracle.sample(n_full, generator=g), generator=g, **kw)
    se_full = full.mean_stderr()
    print(
        f"  full: N = {n_full}, {full.n_evals} evals, mean {full.mean():.4f} ± {se_full:.4f} nats "
        f"(exact expected bound {exact:.4f}; {time.perf_counter() - t0:.1f} s)"
    )
    proposal = estimate_proposal(model, schedule, oracle.sample(4, generator=g), generator=g, grid=64, **kw)
    pilot = 4 * len(pilot_steps(T, 64))
    print(f"  importance proposal from a pilot of 4 images x {pilot // 4} steps ({pilot} evals, reusable across runs)")
    header = ("estimator", "M", "std/image", "mean", "z vs exact", "evals", "ratio")
    print("  " + " ".join(f"{h:>{w}s}" for h, w in zip(header, (10, 3, 10, 10, 10, 9, 7))))
    for estimator in ("uniform", "stratified", "importance"):
        for M in (2, 4, 8):
            x = oracle.sample(n_sampled, generator=g)
            r = variational_bound(
                model, schedule, x, estimator=estimator, num_samples=M, proposal=proposal, generator=g, **kw
            )
            var = float(r.total.var())
            per_image = (r.n_evals - r.n_pilot_evals) / n_sampled  # M sampled steps + 2 decoder draws
            needed = var / se_full**2 * per_image
            z = (r.mean() - exact) / r.mean_stderr()
            print(
                f"  {estimator:>10s} {M:3d} {var**0.5:10.4f} {r.mean():10.4f} {z:10.2f} {needed:9.0f} "
                f"{full.n_evals / needed:6.1f}x"
                + (f"  (+{pilot} pilot: {full.n_evals / (needed + pilot):.1f}x)" if estimator == "importance" else "")
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--part", choices=("a", "b", "all"), default="all", help="run only benchmark (a) or (b)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: stable timings on a shared machine)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    oracle = GaussianData.random(64, seed=0)
    if args.part in ("a", "all"):
        overhead_report(args)
    if args.part in ("b", "all"):
        T_b = 200 if args.quick else 1000
        n_full, n_sampled = (32, 400) if args.quick else (100, 2000)
        print(
            f"\n(b) evaluations to match full's standard error of the mean bound (Gaussian oracle, D = 64, T = {T_b})"
        )
        evals_to_match_full(oracle, NoiseSchedule.linear(T_b, scale_to_1000=True), n_full, n_sampled)


def overhead_report(args) -> None:
    print("(a) full estimator: wall time / bare network forward passes (same batches; median of interleaved runs)")
    T_a, N_a, chunk = (50, 4, 100) if args.quick else (100, 8, 400)
    digits = load_digits().test[:N_a]  # (N, 1, 8, 8) float32, 17 levels
    schedule = NoiseSchedule.linear(T_a, scale_to_1000=True)
    net = UNetEps(UNetConfig(T=T_a)).eval()
    ratio, tb, tf = overhead(net, digits, schedule, chunk, args.repeats, levels=17)
    print(
        f"  U-Net ({sum(p.numel() for p in net.parameters()) / 1e6:.2f}M params), N = {N_a}, T = {T_a}, "
        f"chunk {chunk}: bare {tb:.3f} s, full {tf:.3f} s, ratio {ratio:.3f} (target <= 1.10)"
    )
    oracle = GaussianData.random(64, seed=0)
    x = oracle.sample(N_a, generator=torch.Generator().manual_seed(1))
    ratio, tb, tf = overhead(oracle.optimal_eps(schedule), x, schedule, chunk, args.repeats, decoder="gaussian")
    per_eval = (tf - tb) / (N_a * T_a) * 1e6
    print(
        f"  near-free model (oracle MMSE ε, D = 64): ratio {ratio:.2f}; bookkeeping ≈ {per_eval:.1f} µs per evaluation"
    )


if __name__ == "__main__":
    main()

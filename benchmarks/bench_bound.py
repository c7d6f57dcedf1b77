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
    includes the data spread and the estimator's noise.  ``full`` on N images costs 2·N·T evaluations (two ε
    draws per step); a sampled estimator with M steps per image and per-image variance V_M needs
    N' = V_M / se_full² images (fresh data from the oracle), i.e. N'·c_M evaluations (c_M: its evaluations per
    image -- M sampled steps, 4 decoder draws, any take-all draws; + the pilot, printed apart).  (b') does the
    same on a trained digits DDPM (``--ckpt``) with the 360 test digits.
    Model: the Gaussian oracle (``elbo_lab.oracles.gaussian``, D-dimensional N(m, S), MMSE ε-predictor,
    continuous Gaussian decoder), whose exact expected bound is printed alongside.  Target: ≥ 20× fewer evaluations.

(c) Coverage of the reported 95% intervals, and the evaluations ratio at equal standard error, side by side.
    For each model (the Gaussian oracle: exact per-image bound in closed form; a trained digits DDPM
    checkpoint: reference = ``full`` with its own ε-noise standard error, several seeds pooled), each sampled
    estimator and M ∈ {8, 32, 128}: ``--reps`` independent runs (seeds) on the same N images, each with its own
    pilot.  Per-image coverage: the fraction of intervals total_i ± t_ν·√(stderr_i² + se_ref,i²) (Student t,
    the image's Welch–Satterthwaite ν) that contain the reference; dataset coverage: each run's
    ``BoundResult.mean_ci`` (95%) widened by the reference's noise.  Ratio: the evaluations ``full`` (2 ε draws
    per step) spends per image divided by what the sampled estimator needs for the same per-image ε/step-noise
    standard error, (2T)/(c_M·V_M/V_full), with c_M its evaluations per image (pilot excluded: it is paid once
    per model; "w/ pilot" charges this run's pilot to its N images) and V the measured per-image variances
    (spread over the runs; full's from its reported stderr).  "over images" is part (b)'s definition (data
    spread included).  The DDPM reference is ``full`` with 8 ε draws per step, ``--ref-seeds`` seeds pooled: it
    is shared by every run, so it must be precise (4 seeds x 2 draws read 87% per-image coverage at M = 128).

(d) ``full``'s reported ε-noise standard error next to the spread of its mean over 5 seeds on the same images.

Run:  .venv/bin/python benchmarks/bench_bound.py [--quick] [--part c --ckpt runs/ddpm/best.pt --reps 200]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
from scipy.stats import t as student_t

from elbo_lab.bound import pilot_proposal, pilot_steps, variational_bound
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
            variational_bound(model, schedule, x0, estimator="full", chunk_size=chunk, eps_draws=1, **kw)  # = bare
            full.append(time.perf_counter() - t0)
    ratios = [f / b for f, b in zip(full, bare)]
    return statistics.median(ratios), statistics.median(bare), statistics.median(full)


def _evals_needed(r, se_full: float) -> tuple[float, float]:
    """(per-image variance V of the sampled estimate, evaluations it needs for full's s.e. of the mean): N' =
    V / se_full² images at (evaluations per image, pilot excluded) each."""
    var = float(r.total.var())
    return var, var / se_full**2 * (r.n_evals - r.n_pilot_evals) / r.N


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
    proposal, pilot = pilot_proposal(model, schedule, oracle.sample(4, generator=g), generator=g, **kw)
    print(
        f"  importance proposal from a pilot of 4 images x {len(pilot_steps(T, 64))} steps x 4 ε draws ({pilot} evals, "
        "reusable across runs)"
    )
    header = ("estimator", "M", "std/image", "mean", "z vs exact", "evals", "ratio")
    print("  " + " ".join(f"{h:>{w}s}" for h, w in zip(header, (10, 3, 10, 10, 10, 9, 7))))
    for estimator in ("uniform", "stratified", "importance"):
        for M in (2, 4, 8):
            x = oracle.sample(n_sampled, generator=g)
            r = variational_bound(
                model, schedule, x, estimator=estimator, num_samples=M, proposal=proposal, generator=g, **kw
            )
            var, needed = _evals_needed(r, se_full)
            z = (r.mean() - exact) / r.mean_stderr()
            print(
                f"  {estimator:>10s} {M:3d} {var**0.5:10.4f} {r.mean():10.4f} {z:10.2f} {needed:9.0f} "
                f"{full.n_evals / needed:6.1f}x"
                + (f"  (+{pilot} pilot: {full.n_evals / (needed + pilot):.1f}x)" if estimator == "importance" else "")
            )


def ddpm_evals_to_match_full(args) -> None:
    """(b) on the trained digits DDPM: the same comparison on the real test set (images drawn from the 360 test
    digits instead of fresh oracle samples; no exact value: full's mean is the reference)."""
    from elbo_lab.bound import ModelSpec
    from elbo_lab.ddpm import load_model

    m, ckpt = load_model(args.ckpt, "cpu")
    kw = dict(model=ModelSpec.from_ddpm_checkpoint(ckpt), chunk_size=1024, model_dtype=torch.float64)
    test = load_digits().test.to(torch.float64)
    n_full = 40 if args.quick else 120
    full = variational_bound(m, m.schedule, test[:n_full], generator=0, **kw)
    se_full = full.mean_stderr()
    print(f"  full: N = {n_full}, {full.n_evals} evals, mean {full.mean():.4f} ± {se_full:.4f} nats (over images)")
    print(
        "  "
        + " ".join(
            f"{h:>{w}s}"
            for h, w in zip(("estimator", "M", "std/image", "mean", "evals", "ratio"), (10, 3, 10, 10, 9, 7))
        )
    )
    for M in (2, 4, 8, 16):
        r = variational_bound(m, m.schedule, test, estimator="importance", num_samples=M, generator=1, **kw)
        var, needed = _evals_needed(r, se_full)
        print(
            f"  {'importance':>10s} {M:3d} {var**0.5:10.4f} {r.mean():10.4f} {needed:9.0f} "
            f"{full.n_evals / needed:6.1f}x  "
            f"(+{r.n_pilot_evals} pilot: {full.n_evals / (needed + r.n_pilot_evals):.1f}x)"
        )


ESTIMATORS = ["importance", "importance-strat", "stratified", "uniform"]


def _estimator_kw(label: str) -> dict:
    """``importance-strat`` = importance with stratified inverse-CDF draws (``stratified_importance=True``)."""
    if label == "importance-strat":
        return dict(estimator="importance", stratified_importance=True)
    return dict(estimator=label)


def _coverage_rows(model, schedule, x, ref, se_ref, reps, Ms, kw, label, v_full):
    """Runs every estimator × M ``reps`` times on the images x; prints and returns the table rows."""
    N, T = x.shape[0], schedule.T
    rows = []
    for estimator in ESTIMATORS:
        for M in Ms:
            tot, se, dof, evals, pilot = [], [], [], 0, 0
            covered_mean = []
            for rep in range(reps):
                # each run pays for and uses its own pilot (importance): its noise is part of the coverage
                r = variational_bound(
                    model, schedule, x, num_samples=M, generator=10_000 + rep, **_estimator_kw(estimator), **kw
                )
                tot.append(r.total)
                se.append(r.stderr)
                dof.append(r.dof)
                evals, pilot = r.n_evals, r.n_pilot_evals
                # the run's own 95% interval for the mean (BoundResult.mean_ci: Student t, Satterthwaite dof),
                # widened by the reference's noise (0 for the oracle)
                lo, hi = r.mean_ci()
                half = math.hypot((hi - lo) / 2, float(se_ref.pow(2).sum().sqrt()) / N)
                covered_mean.append(abs(r.mean() - float(ref.mean())) <= half)
            tot, se, dof = torch.stack(tot), torch.stack(se), torch.stack(dof)  # (reps, N)
            q = torch.from_numpy(student_t.ppf(0.975, dof.numpy()))  # per-image t quantiles
            half = q * (se.pow(2) + se_ref.pow(2)).sqrt()
            cov_img = float(((tot - ref).abs() <= half).double().mean())
            cov_ds = sum(covered_mean) / reps
            mean_se = (se.pow(2).sum(1) + se_ref.pow(2).sum()).sqrt() / N
            z = float(((tot.mean(1) - ref.mean()) / mean_se).mean())
            v_m = float(tot.var(0).mean())  # per-image variance of the estimator over runs
            c_m = (evals - pilot) / N  # per image, without the pilot (paid once per model: amortised over a test set)
            ratio = (2 * T) / (c_m * v_m / v_full)
            ratio_pilot = (2 * T) / ((evals / N) * v_m / v_full)  # with this run's pilot shared by only N images
            row = dict(
                model=label,
                estimator=estimator,
                M=M,
                reps=reps,
                coverage_image=cov_img,
                coverage_dataset=cov_ds,
                mean_z=z,
                evals_per_image=c_m,
                pilot_evals=pilot,
                ratio_equal_se=ratio,
                ratio_equal_se_with_pilot=ratio_pilot,
            )
            rows.append(row)
            print(
                f"  {label:>6s} {estimator:>16s} {M:4d} {reps:5d} {cov_img:9.3f} {cov_ds:9.3f} {z:7.2f} "
                f"{c_m:8.0f} {pilot:6d} {ratio:8.1f}x {ratio_pilot:8.1f}x",
                flush=True,
            )
    return rows


def coverage_report(args) -> None:
    Ms = (8, 32, 128)
    print("(c) coverage of the 95% interval (per image, dataset mean) and evaluations ratio vs full at equal SE")
    print(
        "  ratio: full's 2T evaluations per image / what the estimator needs per image for full's per-image "
        "estimator-noise s.e. (the one-off pilot excluded; 'w/ pilot': this run's pilot shared by its N images)"
    )
    print(
        "  "
        + " ".join(
            f"{h:>{w}s}"
            for h, w in zip(
                (
                    "model",
                    "estimator",
                    "M",
                    "reps",
                    "cov/img",
                    "cov/mean",
                    "mean z",
                    "evals/im",
                    "pilot",
                    "ratio",
                    "w/ pilot",
                ),
                (6, 16, 4, 5, 9, 9, 7, 8, 6, 9, 9),
            )
        )
    )
    # the Gaussian oracle: exact per-image expected bound (no reference noise)
    if "oracle" in args.models:
        _oracle_coverage(args, Ms)
    if args.ckpt and "ddpm" in args.models:
        _ddpm_coverage(args, Ms)


def _oracle_coverage(args, Ms) -> None:
    T = 200 if args.quick else 1000
    schedule = NoiseSchedule.linear(T, scale_to_1000=True)
    oracle = GaussianData.random(64, seed=0)
    x = oracle.sample(args.images, generator=torch.Generator().manual_seed(3))
    model = oracle.optimal_eps(schedule)
    kw = dict(decoder="gaussian", variance="posterior", chunk_size=8192)
    ref = oracle.pointwise_bound(schedule, "posterior", x).total
    full = variational_bound(model, schedule, x, generator=1, **kw)
    v_full = float(full.stderr.pow(2).mean())
    _coverage_rows(model, schedule, x, ref, torch.zeros_like(ref), args.reps, Ms, kw, "oracle", v_full)


def _ddpm_coverage(args, Ms) -> None:
    if True:
        from elbo_lab.bound import ModelSpec
        from elbo_lab.ddpm import load_model

        m, ckpt = load_model(args.ckpt, "cpu")
        spec = ModelSpec.from_ddpm_checkpoint(ckpt)
        x = load_digits().test[: args.images].to(torch.float64)
        kw = dict(model=spec, chunk_size=1024, model_dtype=torch.float64)
        # the reference: full with 8 ε draws per step, ``--ref-seeds`` seeds pooled (default 4: 32 draws per step).
        # It is the same for every repetition, so its error is shared by all of them: it must be small next to the
        # estimators' (with 4 seeds x 2 draws the importance per-image coverage at M = 128 read 0.87)
        runs = [variational_bound(m, m.schedule, x, generator=s, eps_draws=8, **kw) for s in range(args.ref_seeds)]
        ref = torch.stack([r.total for r in runs]).mean(0)
        se_ref = torch.stack([r.stderr for r in runs]).pow(2).sum(0).sqrt() / len(runs)
        # per-image variance of ``full`` with its default 2 draws per step (what the ratio compares against): the
        # 8-draw runs' stderr² times 8/2
        v_full = float(torch.stack([r.stderr for r in runs]).pow(2).mean()) * 8 / 2
        _coverage_rows(m, m.schedule, x, ref, se_ref, args.reps, Ms, kw, "ddpm", v_full)


def full_noise_report(args) -> None:
    """(d) full on the same images with 5 seeds: reported ε-noise SE of the mean vs the spread of the means."""
    from elbo_lab.bound import ModelSpec
    from elbo_lab.ddpm import load_model

    print("(d) full: reported ε-noise standard error vs the spread over 5 seeds (same images, bits/dim)")
    m, ckpt = load_model(args.ckpt, "cpu")
    spec = ModelSpec.from_ddpm_checkpoint(ckpt)
    x = load_digits().test[: args.images].to(torch.float64)
    means, ses = [], []
    for seed in range(5):
        r = variational_bound(
            m, m.schedule, x, model=spec, generator=seed, model_dtype=torch.float64, bits_per_dim=True
        )
        means.append(r.mean())
        ses.append(r.mean_stderr("estimator"))
        print(f"  seed {seed}: {r.mean():.5f} ± {ses[-1]:.5f} (reported ε-noise s.e.), {r.n_evals} evaluations")
    rms = statistics.mean(v * v for v in ses) ** 0.5
    print(
        f"  spread over the 5 seeds: std {statistics.stdev(means):.5f}; reported s.e. (rms) {rms:.5f}; "
        f"ratio {statistics.stdev(means) / rms:.2f} (1 = honest; the std of 5 values is itself ±35%)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--part", choices=("a", "b", "c", "d", "all"), default="all", help="run only one benchmark")
    ap.add_argument("--ckpt", default=None, help="a trained digits DDPM checkpoint for (c) and (d)")
    ap.add_argument("--reps", type=int, default=200, help="(c) runs per estimator and M")
    ap.add_argument("--images", type=int, default=4, help="(c, d) images per run")
    ap.add_argument("--ref-seeds", type=int, default=4, help="(c) full runs pooled into the DDPM reference")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: stable timings on a shared machine)")
    ap.add_argument("--estimators", default=",".join(ESTIMATORS), help="(c) comma-separated estimators")
    ap.add_argument("--models", default="oracle,ddpm", help="(c) oracle, ddpm (needs --ckpt)")
    args = ap.parse_args()
    ESTIMATORS[:] = args.estimators.split(",")
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
        if args.ckpt:
            print("\n(b') the same on the trained digits DDPM (--ckpt), 360 test digits")
            ddpm_evals_to_match_full(args)
    if args.part in ("c", "all"):
        coverage_report(args)
    if args.part in ("d", "all") and args.ckpt:
        full_noise_report(args)


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

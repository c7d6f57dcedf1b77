"""Gap of the DDPM bound vs. the number of steps T, for Gaussian data with the exact (MMSE) ε-predictor.

Everything is closed form (``elbo_lab.oracles.GaussianData``): the expected bound of the model that uses the
optimal predictor, that model's own exact expected NLL E[−log p_θ(x_0)], and the data entropy H.  Printed per
schedule (linear as published, cosine), reverse variance (σ_t² = β̃_t "posterior", β_t "beta") and T:

    gap vs p_θ = E[bound] − E[−log p_θ(x_0)]  (the variational gap, ≥ 0)
    gap vs H   = E[bound] − H                 (≥ gap vs p_θ; adds KL(data ‖ p_θ))

in nats and bits/dim (nats / (D ln 2)).  With σ_t² = β_t the gap shrinks roughly like 1/T; with σ_t² = β̃_t it levels
off at ≈ D(γ + 1 − ln 2)/2 ≈ 0.442 D nats (γ = Euler's constant: the first steps' β̃_t ≈ β_t (t−1)/t is too small,
and the clipped decoder variance β̃_2 ≈ β_1/2 adds ½(1 − ln 2) per dimension; tests/test_oracles.py).  Usage::

    .venv/bin/python experiments/gap_vs_T.py [--dim 4] [--seed 0] [--T 10 100 1000 10000] [--json out.json]
"""

from __future__ import annotations

import argparse

from elbo_lab.io import atomic_write_json
from elbo_lab.oracles import GaussianData, format_gap_table, gap_vs_T
from elbo_lab.schedule import NoiseSchedule

SCHEDULES = {"linear": NoiseSchedule.linear, "cosine": NoiseSchedule.cosine}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dim", type=int, default=4, help="data dimension D (default 4)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random mean and covariance")
    ap.add_argument("--T", type=int, nargs="+", default=[10, 100, 1000, 10000], help="numbers of steps")
    ap.add_argument("--schedules", nargs="+", default=list(SCHEDULES), choices=list(SCHEDULES))
    ap.add_argument("--variances", nargs="+", default=["posterior", "beta"], choices=["posterior", "beta"])
    ap.add_argument("--json", help="also write the rows to this JSON file")
    args = ap.parse_args(argv)

    data = GaussianData.random(args.dim, seed=args.seed)
    print(
        f"Gaussian data, D = {data.dim}, eigenvalues {[round(float(v), 4) for v in data.eigvals]}, "
        f"entropy H = {data.entropy():.5f} nats"
    )
    rows = []
    for name in args.schedules:
        for variance in args.variances:
            rows += gap_vs_T(data, SCHEDULES[name], args.T, variance)
    print(format_gap_table(rows))
    if args.json:
        atomic_write_json(args.json, {"dim": data.dim, "seed": args.seed, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

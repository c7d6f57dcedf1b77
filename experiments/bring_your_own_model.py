"""Bits/dim of a DDPM the toolkit did not train: a plain-PyTorch ε-network, wrapped as ``eps_model(x_t, k)``.

The network below is trained with nothing from ``elbo_lab`` -- its own β array, its own paper-convention time
index t = 1..T (like many codebases), its own loop -- on 2-D Gaussian-mixture data whose exact log-density is
known.  ELBO Lab then computes its negative-log-likelihood bound (nats and bits/dim, with a standard error) by
the full and the importance-sampled estimators, and sets it beside two exact references:

- the data's cross-entropy under the true density, E[−log p_data(x)] (no model can beat it on average);
- the bound of the *analytic* optimal ε-predictor of the same mixture (``elbo_lab.oracles.GaussianMixture``).

Usage::

    .venv/bin/python experiments/bring_your_own_model.py [--steps 2000] [--T 200] [--json out.json]
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from torch import nn

from elbo_lab import NoiseSchedule, variational_bound
from elbo_lab.io import atomic_write_json
from elbo_lab.oracles import GaussianMixture

# ------------------------------------------------------------------ somebody else's DDPM (no elbo_lab inside)


class TheirNet(nn.Module):
    """A 2-D ε-network with its own conventions: forward(x, t) with t = 1..T (paper convention)."""

    def __init__(self, T: int, width: int = 128):
        super().__init__()
        self.T = T
        self.net = nn.Sequential(
            nn.Linear(2 + 16, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, 2)
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        freqs = torch.exp(torch.linspace(0, math.log(1000), 8, device=x.device))
        ang = (t.float() / self.T)[:, None] * freqs[None] * math.pi
        return self.net(torch.cat([x, ang.sin(), ang.cos()], dim=1))


def train_their_model(data: torch.Tensor, T: int, steps: int, seed: int) -> tuple[TheirNet, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    betas = torch.linspace(1e-4, 0.05, T, dtype=torch.float64)  # their schedule
    abar = torch.cumprod(1 - betas, 0).float()
    net = TheirNet(T)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    for _ in range(steps):
        x0 = data[torch.randint(0, len(data), (256,), generator=g)].float()
        t = torch.randint(1, T + 1, (256,), generator=g)
        eps = torch.randn(x0.shape, generator=g)
        a = abar[t - 1][:, None]
        loss = ((net(a.sqrt() * x0 + (1 - a).sqrt() * eps, t) - eps) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval(), betas


# ------------------------------------------------------------------ evaluating it with ELBO Lab


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=2000, help="their training steps (default 2000)")
    ap.add_argument("--T", type=int, default=200)
    ap.add_argument("--n", type=int, default=2000, help="test points")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json")
    args = ap.parse_args(argv)

    mixture = GaussianMixture(
        weights=torch.tensor([0.5, 0.3, 0.2]),
        means=torch.tensor([[-1.0, 0.0], [1.0, 0.5], [0.0, -1.2]]),
        covs=torch.tensor([[[0.10, 0.0], [0.0, 0.05]], [[0.05, 0.02], [0.02, 0.08]], [[0.2, 0.0], [0.0, 0.02]]]),
    )
    train = mixture.sample(20_000, torch.Generator().manual_seed(args.seed))
    test = mixture.sample(args.n, torch.Generator().manual_seed(args.seed + 1))

    t0 = time.perf_counter()
    net, betas = train_their_model(train, args.T, args.steps, args.seed)
    print(f"trained their model: {args.steps} steps in {time.perf_counter() - t0:.0f} s")

    # The only glue needed: their betas and their time convention.
    schedule = NoiseSchedule.from_betas(betas, name="theirs")

    @torch.no_grad()
    def eps_model(x_t: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return net(x_t.float(), k + 1).double()  # ELBO Lab's k = 0..T-1 is their t = 1..T

    D = mixture.dim
    rows = []
    ce = -mixture.log_density(test)
    rows.append(
        (
            "E[−log p_data(x)] (exact density, MC over test points)",
            ce.mean().item(),
            ce.std().item() / math.sqrt(len(ce)),
            0,
        )
    )
    for name, model in (("their network", eps_model), ("analytic optimal ε̂ (oracle)", mixture.optimal_eps(schedule))):
        for est in ("full", "importance"):
            kw = dict(num_samples=8) if est == "importance" else {}
            r = variational_bound(
                model, schedule, test, estimator=est, decoder="gaussian", variance="beta", generator=args.seed, **kw
            )
            rows.append((f"{name}: bound, {est}", r.mean(), r.mean_stderr(), r.n_evals))
    print(f"\nNegative-log-likelihood bounds (≥ −log p_θ), {args.n} test points, D = {D}, T = {args.T}, σ_t² = β_t")
    print(f"{'quantity':<58} {'nats':>9} {'± se':>7} {'bits/dim':>9} {'net evals':>10}")
    for name, v, se, n in rows:
        print(f"{name:<58} {v:>9.4f} {se:>7.4f} {v / (D * math.log(2)):>9.4f} {n:>10}")
    if args.json:
        atomic_write_json(args.json, {"rows": [dict(zip(("quantity", "nats", "stderr", "n_evals"), r)) for r in rows]})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

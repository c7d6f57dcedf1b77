"""Ancestral sampling (E11) from a trained ε-model and a PNG grid of the samples.

x_T ~ N(0, I); for k = T−1 … 0 (paper step t = k + 1): x_{t−1} = :func:`elbo_lab.diffusion.p_sample_step`
(μ_θ(x_t, t) + σ_t z, no noise at k = 0), with σ_t² fixed ("posterior" β̃_t or "beta" β_t) or learned
(:func:`elbo_lab.diffusion.reverse_variance_from_v`).  The final x_0 = μ_θ(x_1, 1) is the decoder mean; for
K-level data it is shown rounded to the nearest level (the mode of the discretized decoder when |μ| ≤ 1).
Randomness comes only from the generator passed in.  Test: ``tests/test_ddpm.py`` (writes a PNG).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from .. import diffusion as D
from ..io import atomic_write
from .model import EpsModel

__all__ = ["ancestral_sample", "save_grid"]


@torch.no_grad()
def ancestral_sample(
    model: EpsModel,
    shape: tuple[int, ...],
    n: int,
    *,
    variance: str,
    generator: torch.Generator,
    dtype=torch.float32,
    progress: bool = False,
    trace=None,
) -> torch.Tensor:
    """n samples (n, *shape) from p_θ by the E11 chain, on the model's device, in ``dtype``.

    ``trace(k, x_t, eps_hat)``, if given, is called at every step before x_{t−1} is drawn (k = t − 1), e.g. to
    record x_t and the model's x̂_0 = :func:`elbo_lab.diffusion.predict_x0` along the chain.
    """
    schedule = model.schedule
    dev = model.device
    x = torch.randn((n, *shape), generator=generator, device=generator.device, dtype=dtype).to(dev)  # x_T
    steps = range(schedule.T - 1, -1, -1)
    if progress:
        from tqdm import tqdm

        steps = tqdm(steps, desc="sampling", leave=False, dynamic_ncols=True)
    for k in steps:
        kk = torch.full((n,), k, dtype=torch.long, device=dev)
        out = model(x, kk)
        if variance == "learned":
            eps, v = out
            var = D.reverse_variance_from_v(schedule, kk, v)
        else:
            eps, var = out, variance
        if trace is not None:
            trace(k, x, eps)
        z = torch.randn(x.shape, generator=generator, device=generator.device, dtype=dtype).to(dev)
        x = D.p_sample_step(schedule, x, kk, eps, z, var)
    return x


def save_grid(samples: torch.Tensor, path: str | Path, *, levels: int | None = None, title: str = "") -> Path:
    """A PNG grid of image samples (n, C, H, W) in [−1, 1] (vectors (n, D) are drawn as rows), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = samples.detach().to("cpu", torch.float64).clamp(-1, 1)
    if levels is not None:
        x = torch.round((x + 1) * (levels - 1) / 2) / (levels - 1) * 2 - 1
    if x.ndim == 2:
        x = x[:, None, None, :]  # (n, 1, 1, D)
    n = x.shape[0]
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.9, rows * 0.9 + (0.4 if title else 0)), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            img = (x[i] + 1) / 2  # (C, H, W) in [0, 1]
            if img.shape[0] == 1:
                ax.imshow(img[0].numpy(), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
            else:
                ax.imshow(img[:3].permute(1, 2, 0).numpy(), interpolation="nearest")
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    finally:
        plt.close(fig)

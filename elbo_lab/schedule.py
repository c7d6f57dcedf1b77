"""Noise schedules β_1..β_T of a DDPM, in float64, with every derived per-step quantity.

Time convention (used everywhere in elbo_lab): the code index ``k = 0..T−1`` stands for the paper's step
``t = k + 1`` -- the convention of improved-diffusion and diffusers, so their models plug in unchanged.  Every
per-step tensor below has shape (T,) and entry ``k`` belongs to the paper's step t = k + 1.

Guide section: "Forward diffusion" (the schedule and ᾱ_t); DESIGN.md E5/E6/E9.
Test: ``tests/test_schedule.py`` (published schedules reproduced exactly; derived quantities vs. the
lambdified SymPy derivations; invalid inputs raise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

__all__ = ["NoiseSchedule"]


def _check_betas(betas: torch.Tensor) -> None:
    """Raise a ValueError naming the problem if ``betas`` is not a valid schedule."""
    if betas.ndim != 1:
        raise ValueError(f"betas must be a 1-D tensor of shape (T,), got shape {tuple(betas.shape)}")
    if betas.numel() == 0:
        raise ValueError("betas is empty: a schedule needs T >= 1 steps")
    if not bool(torch.isfinite(betas).all()):
        bad = int((~torch.isfinite(betas)).nonzero()[0])
        raise ValueError(f"betas must be finite; betas[{bad}] = {betas[bad].item()}")
    outside = (betas <= 0) | (betas >= 1)
    if bool(outside.any()):
        bad = int(outside.nonzero()[0])
        raise ValueError(f"betas must lie in the open interval (0, 1); betas[{bad}] = {betas[bad].item()!r}")
    alpha_bars = torch.cumprod(torch.cat([betas.new_ones(1), 1.0 - betas]), dim=0)  # ᾱ_0 = 1, ᾱ_1, ..., ᾱ_T
    not_decreasing = alpha_bars[1:] >= alpha_bars[:-1]
    if bool(not_decreasing.any()) or not alpha_bars[-1] > 0:
        bad = int(not_decreasing.nonzero()[0]) if bool(not_decreasing.any()) else betas.numel() - 1
        raise ValueError(
            f"alpha_bar = cumprod(1 - beta) must be strictly decreasing and positive in float64; it is "
            f"{alpha_bars[bad + 1].item()!r} at k = {bad} (beta too small to change it, or the product underflowed)"
        )


@dataclass(frozen=True, eq=False)
class NoiseSchedule:
    """A DDPM noise schedule: ``betas`` (T,) float64 in (0, 1) and the quantities derived from it.

    Code index k = 0..T−1 is the paper's step t = k + 1 (improved-diffusion / diffusers convention).
    Derived tensors (all (T,), float64, on the device of ``betas``):

    - ``alphas`` α_t = 1 − β_t;  ``alpha_bars`` ᾱ_t = ∏_{s≤t} α_s (``cumprod``, as published code does);
    - ``one_minus_alpha_bars`` 1 − ᾱ_t computed as −expm1(Σ log1p(−β_s)) (accurate when ᾱ_t ≈ 1);
    - ``alpha_bars_prev`` ᾱ_{t−1} with ᾱ_0 = 1;
    - ``posterior_variance`` β̃_t = β_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t), so β̃_1 = 0 (Derivation: E6 ``posterior``
      result ``variance``);
    - ``log_posterior_variance_clipped``: log β̃_t with β̃_1 replaced by β̃_2 (improved-diffusion's convention,
      used for the decoder variance at t = 1 and for learned-variance interpolation; for T = 1, log β_1);
    - ``snr`` ᾱ_t / (1 − ᾱ_t) (Derivation: E9 ``eps_weight`` result ``snr``).

    Invalid input (β outside (0, 1), non-finite, empty, not 1-D, ᾱ not strictly decreasing) raises ValueError.
    """

    betas: torch.Tensor  # (T,) float64
    name: str = "custom"

    def __post_init__(self) -> None:
        betas = torch.as_tensor(self.betas)
        if not betas.is_floating_point():
            raise ValueError(f"betas must be a real floating-point tensor, got dtype {betas.dtype}")
        betas = betas.detach().to(torch.float64)
        _check_betas(betas)
        object.__setattr__(self, "betas", betas)

    # -- constructors --------------------------------------------------------------------------------------

    @classmethod
    def linear(
        cls, T: int, beta_start: float = 1e-4, beta_end: float = 0.02, *, scale_to_1000: bool = False
    ) -> NoiseSchedule:
        """DDPM's linear schedule: ``np.linspace(beta_start, beta_end, T)`` in float64 (Ho et al. 2020).

        The end points are used as given.  ``scale_to_1000=True`` reproduces improved-diffusion's
        ``get_named_beta_schedule("linear", T)``, which multiplies both end points by 1000 / T so that
        short schedules still reach ᾱ_T ≈ 0 (the plain linear schedule breaks for T ≲ 200).
        """
        T = _check_T(T)
        if not (0 < beta_start < 1 and 0 < beta_end < 1):
            raise ValueError(f"beta_start and beta_end must lie in (0, 1); got {beta_start!r}, {beta_end!r}")
        if scale_to_1000:
            scale = 1000 / T
            beta_start, beta_end = scale * beta_start, scale * beta_end
        betas = np.linspace(beta_start, beta_end, T, dtype=np.float64)
        suffix = ", scaled 1000/T" if scale_to_1000 else ""
        return cls(torch.from_numpy(betas), name=f"linear(T={T}, {beta_start:g}..{beta_end:g}{suffix})")

    @classmethod
    def cosine(cls, T: int, s: float = 0.008, max_beta: float = 0.999) -> NoiseSchedule:
        """Improved DDPM's cosine schedule (Nichol & Dhariwal 2021, eq. 17), exactly as improved-diffusion's
        ``betas_for_alpha_bar``: β_t = min(1 − ᾱ(t/T) / ᾱ((t−1)/T), max_beta) with
        ᾱ(u) = cos²((u + s)/(1 + s) · π/2), evaluated in Python float64 in the same order of operations.
        """
        T = _check_T(T)
        if not (s >= 0 and math.isfinite(s)):
            raise ValueError(f"cosine offset s must be finite and >= 0, got {s!r}")
        if not (0 < max_beta < 1):
            raise ValueError(f"max_beta must lie in (0, 1), got {max_beta!r}")

        def alpha_bar(u: float) -> float:
            return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

        betas = [min(1 - alpha_bar((i + 1) / T) / alpha_bar(i / T), max_beta) for i in range(T)]
        return cls(torch.tensor(betas, dtype=torch.float64), name=f"cosine(T={T}, s={s:g})")

    @classmethod
    def from_betas(cls, betas, name: str = "custom") -> NoiseSchedule:
        """A schedule from any sequence of β_t (k = 0..T−1 ↔ t = 1..T), converted to float64 and validated."""
        if not torch.is_tensor(betas):
            try:
                betas = torch.from_numpy(np.asarray(betas, dtype=np.float64))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"betas must be a sequence of numbers: {exc}") from None
        return cls(betas, name)

    def to(self, device) -> NoiseSchedule:
        """A copy on ``device`` (still float64; devices without float64 support raise from torch)."""
        return NoiseSchedule(self.betas.to(device), self.name)

    # -- derived quantities (each (T,), float64; index k ↔ paper step t = k + 1) --------------------------------

    @property
    def T(self) -> int:
        return int(self.betas.numel())

    @property
    def device(self) -> torch.device:
        return self.betas.device

    @cached_property
    def alphas(self) -> torch.Tensor:
        """α_t = 1 − β_t."""
        return 1.0 - self.betas

    @cached_property
    def alpha_bars(self) -> torch.Tensor:
        """ᾱ_t = ∏_{s=1}^{t} α_s (Derivation: E5 ``forward_marginal``)."""
        return torch.cumprod(self.alphas, dim=0)

    @cached_property
    def one_minus_alpha_bars(self) -> torch.Tensor:
        """1 − ᾱ_t, computed without cancellation as −expm1(Σ_{s≤t} log1p(−β_s))."""
        return -torch.expm1(torch.cumsum(torch.log1p(-self.betas), dim=0))

    @cached_property
    def alpha_bars_prev(self) -> torch.Tensor:
        """ᾱ_{t−1}, with ᾱ_0 = 1."""
        return torch.cat([self.betas.new_ones(1), self.alpha_bars[:-1]])

    @cached_property
    def one_minus_alpha_bars_prev(self) -> torch.Tensor:
        """1 − ᾱ_{t−1}, with 1 − ᾱ_0 = 0."""
        return torch.cat([self.betas.new_zeros(1), self.one_minus_alpha_bars[:-1]])

    @cached_property
    def posterior_variance(self) -> torch.Tensor:
        """β̃_t = β_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t); β̃_1 = 0.  Derivation: E6 ``posterior`` result ``variance``."""
        return self.betas * self.one_minus_alpha_bars_prev / self.one_minus_alpha_bars

    @cached_property
    def log_posterior_variance_clipped(self) -> torch.Tensor:
        """log β̃_t with β̃_1 := β̃_2 (improved-diffusion); for T = 1 (no β̃_2) log β_1."""
        v = self.posterior_variance
        first = v[1:2] if self.T > 1 else self.betas[:1]
        return torch.log(torch.cat([first, v[1:]]))

    @cached_property
    def snr(self) -> torch.Tensor:
        """SNR(t) = ᾱ_t / (1 − ᾱ_t).  Derivation: E9 ``eps_weight`` result ``snr``."""
        return self.alpha_bars / self.one_minus_alpha_bars

    def __repr__(self) -> str:
        return f"NoiseSchedule({self.name}, T={self.T}, device={self.device})"


def _check_T(T) -> int:
    if isinstance(T, bool) or not isinstance(T, (int, np.integer)) or T < 1:
        raise ValueError(f"T (number of diffusion steps) must be a positive integer, got {T!r}")
    return int(T)

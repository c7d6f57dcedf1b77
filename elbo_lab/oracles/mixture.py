"""Gaussian-mixture oracle: x_0 ~ Σ_j w_j N(m_j, S_j), with its exact density and optimal ε-predictor.

Under the forward process x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε (E5 ``forward_marginal``) the component label j is a
latent variable, so by the tower rule

    E[ε | x_t] = Σ_j r_j(x_t) E[ε | x_t, j],      r_j(x_t) = w_j N(x_t; √ᾱ_t m_j, ᾱ_t S_j + (1−ᾱ_t) I) / q(x_t),

where E[ε | x_t, j] is the single-Gaussian MMSE predictor of :class:`~elbo_lab.oracles.gaussian.GaussianData`
for component j and the responsibilities r_j are computed with log-sum-exp.  The data log-density is
log Σ_j w_j N(x; m_j, S_j) (log-sum-exp, nats).

Time convention: code index k = 0..T−1 stands for the paper's step t = k + 1.  Units: nats.
Tests: ``tests/test_oracles.py`` (one component = the Gaussian oracle; the density integrates to 1 and matches
scipy; the predictor matches a self-normalised importance-sampling estimate of E[ε | x_t] within error bars).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .gaussian import F64, GaussianData, _as_index

__all__ = ["GaussianMixture", "GaussianMixture2D"]


@dataclass(frozen=True)
class GaussianMixture:
    """x_0 ~ Σ_j w_j N(m_j, S_j): weights (J,) positive (normalised here), means (J, D), covs (J, D, D) SPD."""

    weights: torch.Tensor  # (J,)
    means: torch.Tensor  # (J, D)
    covs: torch.Tensor  # (J, D, D)
    components: tuple[GaussianData, ...] = field(init=False, repr=False)

    def __post_init__(self):
        w = torch.as_tensor(self.weights, dtype=F64).detach().cpu()
        means = torch.as_tensor(self.means, dtype=F64).detach().cpu()
        covs = torch.as_tensor(self.covs, dtype=F64).detach().cpu()
        if w.dim() != 1 or w.numel() == 0:
            raise ValueError(f"weights must be a non-empty vector (J,), got shape {tuple(w.shape)}")
        if not torch.isfinite(w).all() or (w <= 0).any():
            raise ValueError("weights must be finite and positive")
        J = w.numel()
        if means.dim() != 2 or means.shape[0] != J:
            raise ValueError(f"means must have shape ({J}, D) to match {J} weights, got {tuple(means.shape)}")
        D = means.shape[1]
        if covs.shape != (J, D, D):
            raise ValueError(f"covs must have shape ({J}, {D}, {D}), got {tuple(covs.shape)}")
        comps = []
        for j in range(J):
            try:
                comps.append(GaussianData(means[j], covs[j]))
            except ValueError as exc:
                raise ValueError(f"component {j}: {exc}") from None
        object.__setattr__(self, "weights", w / w.sum())
        object.__setattr__(self, "means", means)
        object.__setattr__(self, "covs", covs)
        object.__setattr__(self, "components", tuple(comps))

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def _flat(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return self.components[0]._flat(x, name)

    def log_density(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x_0) = log Σ_j w_j N(x_0; m_j, S_j) per point, nats; x (N, D) -> (N,).  Exact."""
        x = self._flat(x, "x")
        logs = torch.stack([c.log_prob(x) for c in self.components], dim=-1)  # (N, J)
        return torch.logsumexp(logs + self.weights.log(), dim=-1)

    log_prob = log_density

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n points (n, D) float64: a component j ~ w, then m_j + S_j^{1/2} z; randomness only from ``generator``."""
        j = torch.multinomial(self.weights, n, replacement=True, generator=generator)  # (n,)
        z = torch.randn(n, self.dim, dtype=F64, generator=generator)
        out = torch.empty(n, self.dim, dtype=F64)
        for i, c in enumerate(self.components):
            sel = j == i
            out[sel] = c.mean + (z[sel] * c.eigvals.sqrt()) @ c.eigvecs.T
        return out

    def responsibilities(self, schedule, x_t: torch.Tensor, k) -> torch.Tensor:
        """r_j(x_t) = P(component j | x_t) at code index k (paper step t = k + 1), (B, J), via log-sum-exp."""
        x = self._flat(x_t, "x_t")
        k = _as_index(k, schedule.T, x.shape[0])
        logs = torch.stack([c.diffused_log_prob(schedule, x, k) for c in self.components], dim=-1)  # (B, J)
        return torch.softmax(logs + self.weights.log(), dim=-1)

    def diffused_log_prob(self, schedule, x_t: torch.Tensor, k) -> torch.Tensor:
        """log q(x_t) = log Σ_j w_j N(x_t; √ᾱ_t m_j, ᾱ_t S_j + (1−ᾱ_t) I) per point, nats; k code index (t = k + 1)."""
        x = self._flat(x_t, "x_t")
        k = _as_index(k, schedule.T, x.shape[0])
        logs = torch.stack([c.diffused_log_prob(schedule, x, k) for c in self.components], dim=-1)
        return torch.logsumexp(logs + self.weights.log(), dim=-1)

    def optimal_eps(self, schedule) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The MMSE ε-predictor E[ε | x_t] = Σ_j r_j(x_t) E[ε | x_t, j] (module doc) as ``eps_model(x_t, k)``.

        x_t (B, D) or (B, *shape) with D values per point; k code index (B,) long or int (paper step t = k + 1);
        output float64, shape of x_t.
        """
        per_component = [c.optimal_eps(schedule) for c in self.components]

        def eps_model(x_t: torch.Tensor, k) -> torch.Tensor:
            shape = x_t.shape
            x = self._flat(x_t, "x_t")  # (B, D)
            k = _as_index(k, schedule.T, x.shape[0])
            r = self.responsibilities(schedule, x, k)  # (B, J)
            eps = torch.stack([f(x, k) for f in per_component], dim=-1)  # (B, D, J)
            return (eps * r.unsqueeze(1)).sum(-1).reshape(shape)

        eps_model.oracle = self
        return eps_model


class GaussianMixture2D(GaussianMixture):
    """A :class:`GaussianMixture` in exactly two dimensions (the toy data of the notebooks and tests)."""

    def __post_init__(self):
        super().__post_init__()
        if self.dim != 2:
            raise ValueError(f"GaussianMixture2D needs 2-D means, got D = {self.dim}")

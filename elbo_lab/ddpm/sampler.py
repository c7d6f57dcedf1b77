"""Timestep samplers for training: uniform, or importance-sampled ∝ √E[L_k²] (improved DDPM's loss-aware sampler).

A sampler draws code indices k (0..T−1, paper step t = k + 1) for a batch and returns the weights 1/(T p_k) that
keep every loss unbiased: E_{k~p}[ℓ_k / (T p_k)] = (1/T) Σ_k ℓ_k = E_{k~U}[ℓ_k].

``ImportanceSampler`` keeps the last ``history`` values of the per-step bound term L_k seen in training for
every k (improved-diffusion's ``LossSecondMomentResampler``), samples uniformly until every k has a full
history (the warm-up), then p_k ∝ √mean(L_k²), mixed with the uniform law: p = (1 − mix) p + mix/T, so every
weight 1/(T p_k) ≤ 1/mix.  Its state (a tensor and counts) goes into checkpoints for exact resume.
Test: ``tests/test_ddpm.py`` (unbiased weights; warm-up; state round trip).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["ImportanceSampler", "UniformSampler", "make_sampler"]


class UniformSampler:
    """k ~ U{0..T−1}, weights 1."""

    kind = "uniform"

    def __init__(self, T: int):
        self.T = T

    def probs(self) -> torch.Tensor:
        return torch.full((self.T,), 1.0 / self.T, dtype=torch.float64)

    def sample(self, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(k (B,) long, weight (B,) float64 = 1/(T p_k)) on the generator's device."""
        k = torch.randint(0, self.T, (batch,), generator=generator, device=generator.device)
        return k, torch.ones(batch, dtype=torch.float64, device=generator.device)

    def update(self, k: torch.Tensor, losses: torch.Tensor) -> None:
        pass

    def state_dict(self) -> dict:
        return {"kind": self.kind}

    def load_state_dict(self, state: dict) -> None:
        pass


class ImportanceSampler(UniformSampler):
    """k ~ p ∝ √E[L_k²] from a running history of the last ``history`` values per step (uniform during warm-up)."""

    kind = "importance"

    def __init__(self, T: int, history: int = 10, mix: float = 0.05):
        super().__init__(T)
        if not 0 < mix <= 1:
            raise ValueError(f"importance sampler mix must lie in (0, 1], got {mix}")
        self.history = history
        self.mix = mix
        self.values = np.zeros((T, history), dtype=np.float64)  # (T, H) ring buffer of the last H values of L_k
        self.counts = np.zeros(T, dtype=np.int64)  # (T,) values seen per step (slot = count mod H)

    @property
    def warmed_up(self) -> bool:
        return bool((self.counts >= self.history).all())

    def probs(self) -> torch.Tensor:
        """p (T,) float64 summing to 1: uniform until warmed up, then (1 − mix)·√mean(L²)/Σ + mix/T."""
        if not self.warmed_up:
            return super().probs()
        rms = torch.from_numpy(np.sqrt((self.values**2).mean(1)))  # (T,)
        total = float(rms.sum())
        q = rms / total if total > 0 else super().probs()
        return (1.0 - self.mix) * q + self.mix / self.T

    def sample(self, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.probs().to(generator.device)
        k = torch.multinomial(p, batch, replacement=True, generator=generator)
        return k, 1.0 / (self.T * p[k])

    def update(self, k: torch.Tensor, losses: torch.Tensor) -> None:
        """Record each (k_b, L_b) in row k_b of the history (the oldest value is overwritten when the row is full;
        the mean of squares does not depend on the order)."""
        for kb, lb in zip(k.tolist(), losses.detach().to(torch.float64).cpu().tolist()):
            self.values[kb, self.counts[kb] % self.history] = lb
            self.counts[kb] += 1

    def state_dict(self) -> dict:
        return {
            "kind": self.kind,
            "values": torch.from_numpy(self.values.copy()),
            "counts": torch.from_numpy(self.counts.copy()),
            "mix": self.mix,
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind") != self.kind or tuple(state["values"].shape) != self.values.shape:
            raise ValueError("sampler state does not match this sampler (kind, T or history differ)")
        self.values[...] = state["values"].numpy()
        self.counts[...] = state["counts"].numpy()


def make_sampler(kind: str, T: int, *, history: int = 10, mix: float = 0.05) -> UniformSampler:
    if kind == "uniform":
        return UniformSampler(T)
    if kind == "importance":
        return ImportanceSampler(T, history=history, mix=mix)
    raise ValueError(f"unknown timestep sampler {kind!r} (expected uniform or importance)")

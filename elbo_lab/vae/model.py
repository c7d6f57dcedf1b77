"""A small MLP VAE for K-level data in [−1, 1]: Gaussian q(z|x) with diagonal covariance, prior N(0, I), and a
discrete pixel likelihood, so that its bound is a true bits/dim number comparable with the DDPM's.

Guide section: "The VAE route".  The model only defines the three densities of E3
(log p(x|z), q(z|x) = N(mean(x), diag var(x)), p(z) = N(0, I)); the bounds are in :mod:`.estimators`.

Pixel likelihood (``VAEConfig.likelihood``):

- ``"categorical"`` (default): a K-way categorical per pixel, logits from the decoder -- the exact probability of
  the observed level, so log p(x|z) is a log-probability mass (≤ 0) and −ELBO/(D ln 2) is an upper bound on the
  model's negative log-likelihood in bits/dim.
- ``"discretized_gaussian"``: N(mean, var) integrated over each level's bin (outer bins to ±∞),
  :func:`elbo_lab.gaussian.discretized_gaussian_log_likelihood`.

Every parameter is initialised from an explicit ``torch.Generator`` (the global RNG is never touched), so a
seed fixes the model.  Test: ``tests/test_vae.py``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
from torch import nn

from ..data import from_levels, to_levels
from ..gaussian import discretized_gaussian_log_likelihood

__all__ = ["LIKELIHOODS", "VAE", "VAEConfig"]

LIKELIHOODS = ("categorical", "discretized_gaussian")
_LOGVAR_MIN, _LOGVAR_MAX = -30.0, 20.0  # keeps exp(logvar) finite; far outside any trained value


@dataclass(frozen=True)
class VAEConfig:
    """Architecture.  ``shape``: one example's shape, e.g. (1, 8, 8); D = prod(shape); K = ``levels``."""

    shape: tuple[int, ...]
    levels: int
    latent: int = 16
    hidden: int = 256
    depth: int = 2  # hidden layers in the encoder and in the decoder
    likelihood: str = "categorical"

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        if not self.shape or any(s < 1 for s in self.shape):
            raise ValueError(f"shape must be a non-empty tuple of positive sizes, got {self.shape}")
        if self.levels < 2:
            raise ValueError(f"levels must be >= 2, got {self.levels}")
        if self.latent < 1 or self.hidden < 1 or self.depth < 1:
            raise ValueError(f"latent, hidden and depth must be >= 1, got {self.latent}, {self.hidden}, {self.depth}")
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {self.likelihood!r}")

    @property
    def dim(self) -> int:
        return math.prod(self.shape)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> VAEConfig:
        names = {f.name for f in fields(cls)}
        if not isinstance(d, dict) or set(d) != names:
            raise ValueError(f"a VAE config needs exactly the keys {sorted(names)}, got {sorted(d or {})}")
        return cls(**d)


def _mlp(sizes: list[int], generator: torch.Generator) -> nn.Sequential:
    """Linear/SiLU stack; weights and biases ~ U(−1/√fan_in, 1/√fan_in) (PyTorch's default) from ``generator``."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        lin = torch.nn.utils.skip_init(nn.Linear, a, b)  # no draw from the global RNG
        bound = 1.0 / math.sqrt(a)
        with torch.no_grad():
            lin.weight.uniform_(-bound, bound, generator=generator)
            lin.bias.uniform_(-bound, bound, generator=generator)
        layers.append(lin)
        if i < len(sizes) - 2:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)


class VAE(nn.Module):
    """MLP encoder x ↦ (mean, var) of q(z|x) and MLP decoder z ↦ pixel-likelihood parameters."""

    def __init__(self, config: VAEConfig, generator: torch.Generator | None = None):
        super().__init__()
        if generator is None:
            generator = torch.Generator().manual_seed(0)
        self.config = config
        c = config
        out = c.dim * (c.levels if c.likelihood == "categorical" else 2)
        self.encoder = _mlp([c.dim] + [c.hidden] * c.depth + [2 * c.latent], generator)
        self.decoder = _mlp([c.latent] + [c.hidden] * c.depth + [out], generator)

    @property
    def latent_dim(self) -> int:
        return self.config.latent

    @property
    def dim(self) -> int:
        return self.config.dim

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z|x) = N(mean, diag var): x (B, *shape) in [−1, 1] → mean, var, each (B, L)."""
        h = self.encoder(x.reshape(len(x), -1).to(self.encoder[0].weight.dtype))  # (B, 2L)
        mean, logvar = h.chunk(2, dim=-1)
        return mean, torch.exp(logvar.clamp(_LOGVAR_MIN, _LOGVAR_MAX))

    def init_output_bias(self, log_probs: torch.Tensor) -> None:
        """Start the categorical decoder at a per-pixel model: output bias = log p_d(k) (D, K), last weights 0.

        With zero output weights the decoder ignores z, so training starts from the per-pixel baseline's
        likelihood instead of from a uniform one (a faster start; the ELBO is unaffected as a bound).
        """
        if self.config.likelihood != "categorical":
            raise ValueError("init_output_bias applies to the categorical likelihood only")
        last = self.decoder[-1]
        with torch.no_grad():
            last.bias.copy_(log_probs.reshape(-1).to(last.bias.dtype))
            last.weight.zero_()

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x|z) summed over the D pixels, nats, float64: x (B, *shape), z (S, B, L) → (S, B).

        Categorical: log softmax(logits)[level of x] per pixel.  Discretized Gaussian: the mass of each level's bin.
        """
        c = self.config
        S, B = z.shape[:2]
        h = self.decoder(z.to(self.decoder[0].weight.dtype))  # (S, B, D*K) or (S, B, D*2)
        if c.likelihood == "categorical":
            logits = h.reshape(S, B, c.dim, c.levels)  # (S, B, D, K)
            idx = to_levels(x.reshape(B, c.dim), c.levels).expand(S, B, c.dim)  # (S, B, D)
            # log_softmax + gather: 2x faster than logits[idx] - logsumexp(logits) on CPU (K is small)
            logp = torch.log_softmax(logits, dim=-1).gather(-1, idx.unsqueeze(-1)).squeeze(-1)  # (S, B, D)
        else:
            mean, logvar = h.reshape(S, B, c.dim, 2).unbind(-1)  # (S, B, D) each
            xs = x.reshape(B, c.dim).to(mean.dtype).expand(S, B, c.dim)
            var = torch.exp(logvar.clamp(_LOGVAR_MIN, _LOGVAR_MAX))
            logp = discretized_gaussian_log_likelihood(xs, mean, var, c.levels)
        return logp.to(torch.float64).sum(-1)  # (S, B)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n draws x ~ p(x) = ∫ p(x|z) p(z) dz (ancestral): (n, *shape) on the K-level grid in [−1, 1]."""
        c = self.config
        w = self.decoder[0].weight
        z = torch.randn(n, c.latent, generator=generator, dtype=w.dtype)  # (n, L)
        h = self.decoder(z)
        if c.likelihood == "categorical":
            probs = torch.softmax(h.reshape(n * c.dim, c.levels), dim=-1)  # (n*D, K)
            k = torch.multinomial(probs, 1, generator=generator).reshape(n, c.dim)
        else:
            mean, logvar = h.reshape(n, c.dim, 2).unbind(-1)
            eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
            xc = (mean + torch.exp(0.5 * logvar.clamp(_LOGVAR_MIN, _LOGVAR_MAX)) * eps).clamp(-1, 1)
            k = to_levels(xc, c.levels)
        return from_levels(k.to(w.dtype), c.levels).reshape(n, *c.shape)

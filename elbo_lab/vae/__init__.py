"""The VAE side: a small MLP VAE for K-level data and its estimators of log p(x) (ELBO with analytic or sampled
KL, IWAE_k), in nats and bits/dim.  See :mod:`.model`, :mod:`.estimators`, :mod:`.train`."""

from .estimators import ESTIMATORS, ElboDraws, elbo, elbo_draws, estimate, iwae, kl_to_standard_normal
from .model import VAE, VAEConfig

__all__ = [
    "ESTIMATORS",
    "VAE",
    "ElboDraws",
    "VAEConfig",
    "elbo",
    "elbo_draws",
    "estimate",
    "iwae",
    "kl_to_standard_normal",
]

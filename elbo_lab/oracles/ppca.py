"""The linear-Gaussian VAE (probabilistic PCA) as an oracle: exact log p(x), exact posterior, exact ELBO.

Guide section: "The VAE route".  Model (Tipping & Bishop 1999): p(z) = N(0, I_L), p(x|z) = N(W z + b, σ² I_D),
x ∈ R^D (continuous data, continuous Gaussian decoder).  Derivation: E4 ``linear_gaussian``:

- marginal p(x) = N(b, C), C = W Wᵀ + σ² I                      (result ``log_marginal`` / ``log_marginal_2d``)
- posterior p(z|x) = N(M⁻¹ Wᵀ (x − b), σ² M⁻¹), M = WᵀW + σ² I  (``posterior_mean``, ``posterior_variance``)
- for q(z|x) = N(m, diag v): ELBO(m, v) = −(D/2) log(2πσ²) − [‖x − W m − b‖² + Σ_j v_j ‖w_j‖²] / (2σ²)
  − KL(q ‖ N(0, I))                                             (``elbo``; the KL is E1's, summed over j)
- log p(x) − ELBO = KL(q(z|x) ‖ p(z|x)) ≥ 0, zero exactly at the posterior (E3, E4 ``gap``).

Maximum-likelihood fit in closed form (Tipping & Bishop, eq. 7-8): b = mean of the data; with the eigen-
decomposition of the (1/N) sample covariance, λ_1 ≥ … ≥ λ_D, σ² = mean(λ_{L+1..D}) and
W = U_L (Λ_L − σ² I)^{1/2}.  Its columns are orthogonal, so WᵀW and hence the posterior covariance are
diagonal and a diagonal-Gaussian encoder can represent the posterior exactly.

The model plugs into the VAE estimators (:mod:`elbo_lab.vae.estimators`) through :class:`EncodedPPCA`, so the
same ELBO and IWAE code that bounds the digits VAE is checked here against exact answers.
Units: nats per example, float64; bits/dim = −nats / (D ln 2).  Tests: ``tests/test_vae.py``
(vs. the lambdified E4 results at D = 1 and D = 2, scipy.stats.multivariate_normal, Gaussian conditioning of
the joint, scikit-learn's PCA covariance, and the MC estimators' convergence).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..gaussian import normal_kl, normal_log_prob

__all__ = ["PPCA", "EncodedPPCA", "LinearEncoder"]

_f64 = torch.float64


@dataclass
class LinearEncoder:
    """An amortised Gaussian encoder q(z|x) = N(A x + c, diag var): ``a`` (L, D), ``c`` (L,), ``var`` (L,)."""

    a: torch.Tensor
    c: torch.Tensor
    var: torch.Tensor

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.as_tensor(x, dtype=_f64)
        mean = x @ self.a.T + self.c  # (N, L)
        return mean, self.var.expand_as(mean)


@dataclass
class PPCA:
    """p(z) = N(0, I_L), p(x|z) = N(W z + b, σ² I_D); ``w`` (D, L), ``b`` (D,), ``sigma2`` > 0; float64."""

    w: torch.Tensor
    b: torch.Tensor
    sigma2: float

    def __post_init__(self):
        self.w = torch.as_tensor(self.w, dtype=_f64)
        self.b = torch.as_tensor(self.b, dtype=_f64)
        self.sigma2 = float(self.sigma2)
        if self.w.ndim != 2 or self.b.shape != (self.w.shape[0],):
            raise ValueError(f"w must be (D, L) and b (D,); got {tuple(self.w.shape)} and {tuple(self.b.shape)}")
        if not (self.sigma2 > 0 and math.isfinite(self.sigma2)):
            raise ValueError(f"sigma2 must be positive and finite, got {self.sigma2}")

    @property
    def dim(self) -> int:
        return self.w.shape[0]

    @property
    def latent_dim(self) -> int:
        return self.w.shape[1]

    @classmethod
    def fit(cls, x: torch.Tensor, latent: int) -> PPCA:
        """Maximum-likelihood PPCA in closed form (Tipping & Bishop 1999) on data ``x`` (N, D), L = ``latent`` < D."""
        x = torch.as_tensor(x, dtype=_f64)
        if x.ndim != 2:
            raise ValueError(f"PPCA needs vector data (N, D), got shape {tuple(x.shape)}")
        n, d = x.shape
        if not 1 <= latent < d:
            raise ValueError(f"latent must be in 1..D-1 = 1..{d - 1}, got {latent}")
        if n < 2 or not torch.isfinite(x).all():
            raise ValueError("PPCA needs at least 2 finite examples")
        b = x.mean(0)
        cov = (x - b).T @ (x - b) / n  # (D, D), the ML (1/N) sample covariance
        lam, u = torch.linalg.eigh(cov)  # ascending
        lam, u = lam.flip(0), u.flip(1)  # descending
        sigma2 = float(lam[latent:].mean())
        if not sigma2 > 1e-12 * max(float(lam[0]), 1e-300):
            raise ValueError("the data lie (almost) in a latent-dimensional subspace: σ² = 0, p(x) is degenerate")
        w = u[:, :latent] * torch.sqrt(torch.clamp(lam[:latent] - sigma2, min=0.0))  # (D, L)
        return cls(w, b, sigma2)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """x = W z + b + σ ε, z, ε ~ N(0, I): (n, D)."""
        z = torch.randn(n, self.latent_dim, generator=generator, dtype=_f64)
        eps = torch.randn(n, self.dim, generator=generator, dtype=_f64)
        return z @ self.w.T + self.b + math.sqrt(self.sigma2) * eps

    def marginal_covariance(self) -> torch.Tensor:
        """C = W Wᵀ + σ² I, (D, D).  Derivation: E4 ``log_marginal`` (the marginal's covariance)."""
        return self.w @ self.w.T + self.sigma2 * torch.eye(self.dim, dtype=_f64)

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(x) = log N(x; b, W Wᵀ + σ² I) per example (N,), nats (Cholesky; float64).

        Derivation: E4 ``linear_gaussian`` results ``log_marginal`` (D = 1) and ``log_marginal_2d``.
        """
        x = torch.as_tensor(x, dtype=_f64)
        chol = torch.linalg.cholesky(self.marginal_covariance())  # (D, D)
        r = torch.linalg.solve_triangular(chol, (x - self.b).T, upper=False)  # (D, N)
        logdet = 2.0 * torch.log(torch.diagonal(chol)).sum()
        return -0.5 * (self.dim * math.log(2 * math.pi) + logdet + (r**2).sum(0))

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """p(z|x) = N(M⁻¹ Wᵀ (x − b), σ² M⁻¹), M = WᵀW + σ² I: mean (N, L), covariance (L, L).

        Derivation: E4 ``posterior_mean``, ``posterior_variance`` (and their ``_2d`` versions).
        """
        x = torch.as_tensor(x, dtype=_f64)
        m = self.w.T @ self.w + self.sigma2 * torch.eye(self.latent_dim, dtype=_f64)  # (L, L)
        mean = torch.linalg.solve(m, self.w.T @ (x - self.b).T).T  # (N, L)
        return mean, self.sigma2 * torch.linalg.inv(m)

    def exact_encoder(self) -> LinearEncoder:
        """The true posterior as a diagonal encoder (needs WᵀW diagonal, as in every :meth:`fit` result)."""
        m = self.w.T @ self.w + self.sigma2 * torch.eye(self.latent_dim, dtype=_f64)
        off = m - torch.diag(torch.diagonal(m))
        if off.abs().max() > 1e-10 * m.abs().max():
            raise ValueError("WᵀW is not diagonal: the exact posterior has a full covariance (rotate W first)")
        a = torch.linalg.solve(m, self.w.T)  # (L, D)
        return LinearEncoder(a, -a @ self.b, self.sigma2 / torch.diagonal(m))

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x|z) = Σ_i log N(x_i; (W z + b)_i, σ²): x (B, D), z (S, B, L) → (S, B), nats, float64."""
        x = torch.as_tensor(x, dtype=_f64)
        mean = z.to(_f64) @ self.w.T + self.b  # (S, B, D)
        return normal_log_prob(x, mean, torch.tensor(self.sigma2, dtype=_f64)).sum(-1)

    def elbo(self, x: torch.Tensor, m: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Exact ELBO for q(z|x) = N(m, diag v) per example (N,), nats (≤ log p(x); equal iff q = p(z|x)).

        −(D/2) log(2πσ²) − [‖x − W m − b‖² + Σ_j v_j ‖w_j‖²]/(2σ²) − Σ_j KL(N(m_j, v_j) ‖ N(0, 1)).
        Derivation: E4 ``linear_gaussian`` result ``elbo`` (``elbo_2d``); the KL is E1 via :func:`normal_kl`.
        """
        x, m, v = (torch.as_tensor(t, dtype=_f64) for t in (x, m, v))
        resid = x - m @ self.w.T - self.b  # (N, D)
        trace = (v * (self.w**2).sum(0)).sum(-1)  # Σ_j v_j ‖w_j‖², (N,)
        recon = -0.5 * self.dim * math.log(2 * math.pi * self.sigma2) - ((resid**2).sum(-1) + trace) / (2 * self.sigma2)
        kl = normal_kl(m, v, torch.zeros_like(m), torch.ones_like(v)).sum(-1)
        return recon - kl

    def kl_to_posterior(self, x: torch.Tensor, m: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """KL(N(m, diag v) ‖ p(z|x)) per example (N,), nats, for any W (full-covariance posterior allowed).

        Computed with ``torch.distributions`` (an independent route from :meth:`elbo` and :meth:`log_marginal`);
        E3 says log p(x) − ELBO equals it -- checked in ``tests/test_vae.py::test_ppca_gap_is_kl``.
        """
        from torch.distributions import MultivariateNormal, kl_divergence

        m, v = torch.as_tensor(m, dtype=_f64), torch.as_tensor(v, dtype=_f64)
        post_mean, post_cov = self.posterior(x)
        q = MultivariateNormal(m, covariance_matrix=torch.diag_embed(v))
        p = MultivariateNormal(post_mean, covariance_matrix=post_cov.expand(len(m), -1, -1))
        return kl_divergence(q, p)

    def with_encoder(self, encoder: LinearEncoder | None = None) -> EncodedPPCA:
        """This model with an encoder (default: the exact posterior), as input for the VAE estimators."""
        return EncodedPPCA(self, encoder if encoder is not None else self.exact_encoder())


@dataclass
class EncodedPPCA:
    """A PPCA decoder with a diagonal-Gaussian encoder: the latent-variable-model interface of
    :mod:`elbo_lab.vae.estimators` (``encode``, ``log_likelihood``, ``latent_dim``, ``dim``)."""

    model: PPCA
    encoder: LinearEncoder

    @property
    def dim(self) -> int:
        return self.model.dim

    @property
    def latent_dim(self) -> int:
        return self.model.latent_dim

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(x)

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.model.log_likelihood(x, z)

    def exact_elbo(self, x: torch.Tensor) -> torch.Tensor:
        """The closed-form ELBO of this encoder (N,), nats."""
        return self.model.elbo(x, *self.encoder(x))

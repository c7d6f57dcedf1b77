"""Gaussian-data oracle: x_0 ~ N(m, S) in D dimensions, diffused by a :class:`~elbo_lab.schedule.NoiseSchedule`.

Everything here is exact (float64, closed form), so the numeric engine can be checked against it:

1. The optimal (MMSE) ε-predictor.  x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε (E5 ``forward_marginal``) makes (x_0, ε, x_t)
   jointly Gaussian with Cov(x_t) = C_t = ᾱ_t S + (1−ᾱ_t) I and Cov(ε, x_t) = √(1−ᾱ_t) I, so

       ε̂(x_t, t) = E[ε | x_t] = √(1−ᾱ_t) C_t⁻¹ (x_t − √ᾱ_t m).

2. The DDPM that uses it.  Its reverse mean (E6 ε form, implemented once in :func:`elbo_lab.diffusion.reverse_mean`)
   is linear in x_t and in ε̂, and ε̂ is affine in x_t, so p_θ(x_{t−1}|x_t) = N(A_t x_t + c_t, σ_t² I).  The
   oracle does not re-derive A_t, c_t: it reads the scalar coefficients of ``reverse_mean`` and ``q_posterior``
   off the engine (probing them at 0 and 1) and combines them with C_t⁻¹.

3. Closed-form bound terms (a negative-log-likelihood bound, ≥ −log p_θ(x_0), nats).  Everything commutes with
   the eigenbasis S = U diag(λ) U^T (the noise is isotropic), so the problem splits into D independent 1-D
   problems with data N(m'_i, λ_i), m' = U^T m.  In one coordinate the error of the model's mean

       Δ_t = μ̃_t(x_0, x_t) − μ_θ(x_t) = p_t x_0 + (q_t − A_t) x_t − c_t,   μ̃_t = p_t x_0 + q_t x_t  (E6)

   with x_t = a_t x_0 + s_t ε (a_t = √ᾱ_t, s_t = √(1−ᾱ_t)) is Δ_t = g_t x_0 − c_t + h_t ε,
   g_t = p_t + (q_t − A_t) a_t,  h_t = (q_t − A_t) s_t.  For x_0 ~ N(μ_0, v_0) independent of ε,

       E Δ_t² = (g_t μ_0 − c_t)² + g_t² v_0 + h_t²

   (per image: μ_0 = x_0, v_0 = 0; over the data: μ_0 = m'_i, v_0 = λ_i).  The Gaussian KL (E1, E8) and the
   Gaussian log-density are *affine* in the squared mean difference, so their expectations are the same
   functions evaluated at the root-mean-square difference √(E Δ²):

       E L_{t−1} = Σ_i KL(N(0, β̃_t) ‖ N(√(E Δ_t²), σ_t²))                    t = 2..T   (E8 ``mean_matching``)
       E L_0     = Σ_i −log N(√(E Δ_1²); 0, σ_1²),  Δ_1 = x_0 − μ_θ(x_1)       (continuous Gaussian decoder)
       L_T       = Σ_i KL(N(a_T √(E x_0²), s_T²) ‖ N(0, 1))                     (prior term, E7)

   With the MMSE predictor, E Δ_t² over the data = p_t² λ s_t²/C_t (the posterior variance of x_0 given x_t),
   which is E9's weight times E‖ε − ε̂‖² -- an independent route, checked in the tests.

4. The model's own marginal.  The reverse chain x_T ~ N(0, I), x_{t−1} = A_t x_t + c_t + σ_t z_t is linear-
   Gaussian, so x_0 = Σ_t P_{t−1}(c_t + σ_t z_t) + P_T x_T with P_t = A_1⋯A_t, i.e. p_θ(x_0) = N(M, V) with
   M = Σ_t P_{t−1} c_t, V = Σ_t P_{t−1}² σ_t² + P_T² (per eigen-coordinate).

5. The data entropy H = ½ log det(2πe S); E_data[bound] ≥ E_data[−log p_θ(x_0)] ≥ H (cross-entropy ≥ entropy).

Decoder variance at t = 1: σ_1² = :func:`elbo_lab.diffusion.reverse_variance` at k = 0, the engine's convention
(β_1 for "beta"; for "posterior" the clipped β̃_2, since β̃_1 = 0 would make the continuous decoder degenerate).

Time convention: code index k = 0..T−1 stands for the paper's step t = k + 1.  Units: nats; bits/dim =
nats/(D ln 2).  Derivations: E1 ``gaussian_kl``, E5 ``forward_marginal``, E6 ``posterior``, E8
``mean_matching``, E9 ``eps_weight``.  Tests: ``tests/test_oracles.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..gaussian import normal_kl, normal_log_prob

__all__ = ["GaussianData", "OracleBound", "ReverseChain", "format_gap_table", "gap_vs_T"]

F64 = torch.float64


@dataclass(frozen=True)
class OracleBound:
    """A closed-form bound in nats: a negative-log-likelihood bound (≥ −log p_θ(x_0)); ELBO = −total.

    Same layout as :class:`elbo_lab.bound.BoundResult`: ``terms[..., k]`` is the expected L_{t−1} for paper step
    t = k + 1, with column 0 = L_0 (the decoder term, also in ``decoder``); ``total = prior + terms.sum(-1)``.
    Leading dimensions: none for the expectation over the data, (N,) per image.
    """

    prior: torch.Tensor  # (...)       L_T
    decoder: torch.Tensor  # (...)     L_0
    terms: torch.Tensor  # (..., T)    L_{t-1}, column k = code index (0 = L_0)
    total: torch.Tensor  # (...)
    dim: int

    def bits_per_dim(self) -> torch.Tensor:
        """The total as a negative-log-likelihood bound in bits/dim: nats / (D ln 2)."""
        return self.total / (self.dim * math.log(2.0))


@dataclass(frozen=True)
class ReverseChain:
    """Coefficients of the MMSE model's reverse chain, per eigen-coordinate of S (float64).

    p_θ(x_{t−1}|x_t) = N(A_t x_t + c_t, σ_t² I) in the rotated coordinates x' = U^T x; row k = paper step t = k+1.
    ``var[0]`` is the decoder variance σ_1².  ``post_x0``/``post_xt`` are the posterior-mean coefficients p_t, q_t
    (μ̃_t = p_t x_0 + q_t x_t, E6) and ``post_var`` is β̃_t, all read off the engine.
    """

    a: torch.Tensor  # (T,)    √ᾱ_t
    s: torch.Tensor  # (T,)    √(1 − ᾱ_t)
    post_x0: torch.Tensor  # (T,)  p_t
    post_xt: torch.Tensor  # (T,)  q_t
    post_var: torch.Tensor  # (T,) β̃_t
    A: torch.Tensor  # (T, D)
    c: torch.Tensor  # (T, D)
    var: torch.Tensor  # (T,)   σ_t² (σ_1² = decoder variance)


def _per_step(v, T: int) -> torch.Tensor:
    """A per-step coefficient returned by the engine (any broadcastable shape with leading T) as (T,) float64."""
    v = torch.as_tensor(v, dtype=F64)
    if v.dim() == 0:
        return v.expand(T).clone()
    return v.reshape(T, -1)[:, 0].to(F64)


def _as_index(k, T: int, batch: int) -> torch.Tensor:
    """Code index k (0..T−1 ↔ paper step t = k + 1) as a (batch,) long tensor; ValueError if out of range."""
    k = torch.as_tensor(k)
    if k.dtype.is_floating_point or k.dtype == torch.bool:
        raise ValueError(f"timestep index must be an integer tensor, got dtype {k.dtype}")
    k = k.expand(batch) if k.dim() == 0 else k.reshape(-1)
    if k.numel() != batch:
        raise ValueError(f"timestep index has {k.numel()} entries for a batch of {batch}")
    if batch and (int(k.min()) < 0 or int(k.max()) >= T):
        raise ValueError(f"timestep index out of range 0..{T - 1}: got {int(k.min())}..{int(k.max())}")
    return k.long()


@dataclass(frozen=True)
class GaussianData:
    """Gaussian data x_0 ~ N(m, S), m (D,), S (D, D) symmetric positive definite; exact oracle (see module doc)."""

    mean: torch.Tensor  # (D,)
    cov: torch.Tensor  # (D, D)
    eigvals: torch.Tensor = field(init=False, repr=False)  # (D,)  λ
    eigvecs: torch.Tensor = field(init=False, repr=False)  # (D, D) U, columns = eigenvectors

    def __post_init__(self):
        mean = torch.as_tensor(self.mean, dtype=F64).detach().cpu()
        cov = torch.as_tensor(self.cov, dtype=F64).detach().cpu()
        if mean.dim() != 1 or mean.numel() == 0:
            raise ValueError(f"mean must be a non-empty vector (D,), got shape {tuple(mean.shape)}")
        D = mean.numel()
        if cov.shape != (D, D):
            raise ValueError(f"cov must have shape ({D}, {D}) to match the mean, got {tuple(cov.shape)}")
        if not (torch.isfinite(mean).all() and torch.isfinite(cov).all()):
            raise ValueError("mean and cov must be finite")
        if not torch.allclose(cov, cov.T, rtol=1e-10, atol=1e-12):
            raise ValueError("cov must be symmetric")
        cov = 0.5 * (cov + cov.T)
        lam, U = torch.linalg.eigh(cov)
        if lam.min() <= 0:
            raise ValueError(f"cov must be positive definite, smallest eigenvalue {float(lam.min()):.3g}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "cov", cov)
        object.__setattr__(self, "eigvals", lam)
        object.__setattr__(self, "eigvecs", U)

    @classmethod
    def random(cls, dim: int, seed: int = 0, eig_range: tuple[float, float] = (0.05, 0.5)) -> GaussianData:
        """A non-diagonal test Gaussian: eigenvalues evenly spaced in ``eig_range``, a random rotation, and a mean
        uniform in [−0.5, 0.5]^D (data roughly inside [−1, 1]); deterministic in ``seed``."""
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        g = torch.Generator().manual_seed(seed)
        Q, _ = torch.linalg.qr(torch.randn(dim, dim, dtype=F64, generator=g))
        lam = torch.linspace(eig_range[0], eig_range[1], dim, dtype=F64)
        m = torch.rand(dim, dtype=F64, generator=g) - 0.5
        return cls(m, (Q * lam) @ Q.T)

    # ---------------------------------------------------------------------------------------------- data
    @property
    def dim(self) -> int:
        return self.mean.numel()

    def _rotate(self, x: torch.Tensor) -> torch.Tensor:
        """x' = U^T x for a batch x (N, D) (rows are points)."""
        return x @ self.eigvecs.to(x.device)

    def _flat(self, x: torch.Tensor, name: str) -> torch.Tensor:
        x = torch.as_tensor(x)
        if x.dim() == 1:
            x = x.unsqueeze(0)
        x = x.reshape(x.shape[0], -1).to(F64)
        if x.shape[1] != self.dim:
            raise ValueError(f"{name} has {x.shape[1]} dimensions per point, the data has D = {self.dim}")
        return x

    def entropy(self) -> float:
        """Differential entropy H = ½ log det(2πe S) of the data, nats (a lower bound on E_data[−log p_θ(x_0)])."""
        return float(0.5 * torch.log(2 * math.pi * math.e * self.eigvals).sum())

    def log_prob(self, x0: torch.Tensor) -> torch.Tensor:
        """log N(x_0; m, S) per point, nats; x0 (N, D) -> (N,)."""
        x0 = self._rotate(self._flat(x0, "x0"))  # (N, D)
        return normal_log_prob(x0, self._rotate(self.mean), self.eigvals).sum(-1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n points from N(m, S), float64 (n, D); randomness only from ``generator``."""
        z = torch.randn(n, self.dim, dtype=F64, generator=generator)
        return self.mean + (z * self.eigvals.sqrt()) @ self.eigvecs.T

    # ------------------------------------------------------------------------------- diffused marginal
    @staticmethod
    def _levels(schedule) -> tuple[torch.Tensor, torch.Tensor]:
        """(ᾱ_t, 1 − ᾱ_t) for all steps, (T,) float64 on the CPU (1 − ᾱ_t from the schedule, no cancellation)."""
        return schedule.alpha_bars.to(F64).cpu(), schedule.one_minus_alpha_bars.to(F64).cpu()

    def _noise_levels(self, schedule, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(ᾱ_t, 1 − ᾱ_t) at code indices k (paper t = k + 1), float64, shape (B, 1)."""
        abar, one_m = self._levels(schedule)
        k = k.cpu()
        return abar[k].unsqueeze(-1), one_m[k].unsqueeze(-1)

    def diffused_log_prob(self, schedule, x_t: torch.Tensor, k) -> torch.Tensor:
        """log q(x_t) = log N(x_t; √ᾱ_t m, ᾱ_t S + (1−ᾱ_t) I) per point, nats (E5 marginalised over the data).

        x_t (B, D), k code index (B,) or int (paper step t = k + 1) -> (B,).
        """
        x_t = self._flat(x_t, "x_t")
        k = _as_index(k, schedule.T, x_t.shape[0])
        abar, one_m = self._noise_levels(schedule, k)
        y = self._rotate(x_t - abar.sqrt() * self.mean)  # (B, D)
        return normal_log_prob(y, torch.zeros_like(y), abar * self.eigvals + one_m).sum(-1)

    def optimal_eps(self, schedule) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The MMSE ε-predictor ε̂(x_t, k) = E[ε | x_t] = √(1−ᾱ_t) C_t⁻¹ (x_t − √ᾱ_t m), C_t = ᾱ_t S + (1−ᾱ_t) I.

        Returns a callable ``eps_model(x_t, k)``: x_t (B, D) or (B, *shape) with D values per point, k the code
        index (B,) long or an int (k = 0..T−1 stands for paper step t = k + 1); output float64, shape of x_t.
        Derivation: conditioning of the jointly Gaussian (ε, x_t) built by E5.  Test: ``tests/test_oracles.py``
        (equals the least-squares regression of ε on x_t; beats perturbed predictors in ε-MSE).
        """

        def eps_model(x_t: torch.Tensor, k) -> torch.Tensor:
            shape = x_t.shape
            x = self._flat(x_t, "x_t")  # (B, D)
            k = _as_index(k, schedule.T, x.shape[0])
            abar, one_m = self._noise_levels(schedule, k)  # (B, 1)
            abar, one_m = abar.to(x.device), one_m.to(x.device)
            lam = self.eigvals.to(x.device)
            y = self._rotate(x - abar.sqrt() * self.mean.to(x.device))  # (B, D) in the eigenbasis
            y = one_m.sqrt() * y / (abar * lam + one_m)
            return (y @ self.eigvecs.T.to(x.device)).reshape(shape)

        eps_model.oracle = self  # for introspection
        return eps_model

    def eps_mse(self, schedule) -> torch.Tensor:
        """Minimum ε-MSE E‖ε − E[ε|x_t]‖² = tr(I − (1−ᾱ_t) C_t⁻¹) = Σ_i ᾱ_t λ_i / C_{t,i} per step, (T,).

        This is the irreducible part of L_simple (E10) for Gaussian data.  Test: ``tests/test_oracles.py``.
        """
        abar, one_m = (v.unsqueeze(-1) for v in self._levels(schedule))  # (T, 1)
        C = abar * self.eigvals + one_m  # (T, D)
        return (abar * self.eigvals / C).sum(-1)

    # ---------------------------------------------------------------------------------- reverse chain
    def reverse_chain(self, schedule, variance="posterior") -> ReverseChain:
        """Coefficients of the MMSE model's reverse steps in the eigenbasis (see :class:`ReverseChain`).

        μ_θ(x_t) = u_t x_t + v_t ε̂(x_t) with u_t, v_t read off :func:`elbo_lab.diffusion.reverse_mean` (E6 ε form)
        and ε̂ = s_t (x_t − a_t m')/C_t per coordinate, so A_t = u_t + v_t s_t / C_t and c_t = −v_t s_t a_t m'/C_t.
        σ_t² from :func:`elbo_lab.diffusion.reverse_variance` (at k = 0 the engine's decoder variance: the clipped
        β̃_2 for "posterior").  Time convention: row k = paper step t = k + 1.
        """
        from ..diffusion import q_posterior, reverse_mean, reverse_variance

        T = schedule.T
        k = torch.arange(T)
        one, zero = torch.ones(T, 1, dtype=F64), torch.zeros(T, 1, dtype=F64)
        p, post_var = q_posterior(schedule, one, zero, k)  # μ̃ = p x_0 + q x_t; var = β̃_t
        q, _ = q_posterior(schedule, zero, one, k)
        u = reverse_mean(schedule, one, k, zero)  # μ_θ = u x_t + v ε̂
        v = reverse_mean(schedule, zero, k, one)
        p, q, post_var, u, v = (_per_step(z, T) for z in (p, q, post_var, u, v))
        var = _per_step(reverse_variance(schedule, k, variance), T)  # var[0] = decoder variance σ_1²
        abar, one_m = self._levels(schedule)
        a, s = abar.sqrt(), one_m.sqrt()
        C = abar.unsqueeze(-1) * self.eigvals + one_m.unsqueeze(-1)  # (T, D)
        vs = (v * s).unsqueeze(-1)  # (T, 1)
        A = u.unsqueeze(-1) + vs / C
        c = -vs * a.unsqueeze(-1) * self._rotate(self.mean) / C
        return ReverseChain(a=a, s=s, post_x0=p, post_xt=q, post_var=post_var, A=A, c=c, var=var)

    # ---------------------------------------------------------------------------------- bound terms
    def _bound(self, chain: ReverseChain, mu0: torch.Tensor, v0: torch.Tensor) -> OracleBound:
        """Expected bound terms for x_0' ~ N(mu0, diag v0) in the eigenbasis; mu0, v0 (..., D) (see module doc 3)."""
        a, s, A, c = chain.a.unsqueeze(-1), chain.s.unsqueeze(-1), chain.A, chain.c  # (T, 1), (T, D)
        p = chain.post_x0.clone().unsqueeze(-1)
        q = chain.post_xt.clone().unsqueeze(-1)
        p[0], q[0] = 1.0, 0.0  # t = 1: Δ_1 = x_0 − μ_θ(x_1) (decoder), not the posterior mean
        g = p + (q - A) * a  # (T, D)
        h = (q - A) * s  # (T, D)
        mu0, v0 = mu0.unsqueeze(-2), v0.unsqueeze(-2)  # (..., 1, D)
        rms = ((g * mu0 - c) ** 2 + g**2 * v0 + h**2).sqrt()  # (..., T, D) = √(E Δ_t²)
        zero = torch.zeros((), dtype=F64)
        kl = normal_kl(zero, chain.post_var[1:, None], rms[..., 1:, :], chain.var[1:, None]).sum(-1)  # (..., T-1)
        dec = -normal_log_prob(rms[..., 0, :], zero, chain.var[0]).sum(-1)  # (...)
        terms = torch.cat([dec.unsqueeze(-1), kl], dim=-1)
        x0_rms = (mu0[..., 0, :] ** 2 + v0[..., 0, :]).sqrt()
        prior = normal_kl(chain.a[-1] * x0_rms, chain.s[-1] ** 2, zero, torch.ones((), dtype=F64)).sum(-1)
        return OracleBound(prior=prior, decoder=dec, terms=terms, total=prior + terms.sum(-1), dim=self.dim)

    def expected_bound(self, schedule, variance="posterior") -> OracleBound:
        """E over x_0 ~ N(m, S) and the forward process of the MMSE model's bound: every term in closed form, nats.

        A negative-log-likelihood bound: ≥ E_data[−log p_θ(x_0)] (:meth:`model_cross_entropy`) ≥ the data entropy.
        ``variance``: σ_t² = β̃_t ("posterior") or β_t ("beta"), as in the engine; σ_1² = the engine's continuous
        decoder variance.  Scalars, terms (T,) with column k = paper step t = k + 1 (0 = L_0).
        Test: ``tests/test_oracles.py`` (= the engine's ``variational_bound(estimator="full")`` within error bars;
        = KL(q(x_{0:T}) ‖ p_θ(x_{0:T})) + H from dense joint covariances).
        """
        chain = self.reverse_chain(schedule, variance)
        return self._bound(chain, self._rotate(self.mean), self.eigvals)

    def pointwise_bound(self, schedule, variance, x0: torch.Tensor) -> OracleBound:
        """E over the forward noise x_{1:T} ~ q(·|x_0) of the MMSE model's bound, for each given x_0: (N,) nats.

        A negative-log-likelihood bound: ≥ −log p_θ(x_0) (:meth:`model_log_marginal`) at every x_0, since the
        difference is KL(q(x_{1:T}|x_0) ‖ p_θ(x_{1:T}|x_0)) ≥ 0.  Memory O(N·T·D).
        """
        x0 = self._rotate(self._flat(x0, "x0"))  # (N, D)
        chain = self.reverse_chain(schedule, variance)
        return self._bound(chain, x0, torch.zeros_like(x0))

    # ------------------------------------------------------------------------------- model marginal
    def _model_marginal_rotated(self, schedule, variance) -> tuple[torch.Tensor, torch.Tensor]:
        """p_θ(x_0) = N(M, diag V) in the eigenbasis: M = Σ_t P_{t−1} c_t, V = Σ_t P_{t−1}² σ_t² + P_T²."""
        chain = self.reverse_chain(schedule, variance)
        P = torch.cumprod(chain.A, dim=0)  # (T, D): P_t = A_1 ⋯ A_t
        P_prev = torch.cat([torch.ones(1, self.dim, dtype=F64), P[:-1]])  # P_{t−1}, P_0 = 1
        M = (P_prev * chain.c).sum(0)
        V = (P_prev**2 * chain.var.unsqueeze(-1)).sum(0) + P[-1] ** 2
        return M, V

    def model_marginal(self, schedule, variance="posterior") -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (D,) and covariance (D, D) of the model's exact marginal p_θ(x_0) (linear-Gaussian reverse chain)."""
        M, V = self._model_marginal_rotated(schedule, variance)
        U = self.eigvecs
        return U @ M, (U * V) @ U.T

    def model_log_marginal(self, schedule, variance, x0: torch.Tensor) -> torch.Tensor:
        """Exact log p_θ(x_0) of the DDPM with the MMSE predictor, per point (N,), nats (log-likelihood, not a bound).

        Test: ``tests/test_oracles.py`` (≤ −pointwise bound at every x_0; equals the marginal of the dense joint).
        """
        M, V = self._model_marginal_rotated(schedule, variance)
        x0 = self._rotate(self._flat(x0, "x0"))
        return normal_log_prob(x0, M, V).sum(-1)

    def model_cross_entropy(self, schedule, variance="posterior") -> float:
        """E_{x_0 ~ N(m,S)}[−log p_θ(x_0)] = H + KL(data ‖ p_θ), nats (the model's true expected NLL)."""
        M, V = self._model_marginal_rotated(schedule, variance)
        rms = (self.eigvals + (self._rotate(self.mean) - M) ** 2).sqrt()
        return float(-normal_log_prob(rms, torch.zeros_like(M), V).sum())


def gap_vs_T(data: GaussianData, make_schedule: Callable[[int], object], Ts, variance="posterior") -> list[dict]:
    """The MMSE model's bound and its gaps for each T in ``Ts`` (closed form, nats and bits/dim).

    Per row: ``bound`` = E_data[bound] (NLL bound), ``cross_entropy`` = E_data[−log p_θ(x_0)] (the model's exact
    expected NLL), ``entropy`` = H(data); ``gap_model`` = bound − cross_entropy = E_data KL(q(x_{1:T}|x_0) ‖
    p_θ(x_{1:T}|x_0)) ≥ 0 (the variational gap) and ``gap_entropy`` = bound − H ≥ gap_model (adds KL(data ‖ p_θ)).
    ``*_bpd`` = the same in bits/dim (nats / (D ln 2)).  Front-end: ``experiments/gap_vs_T.py``.
    """
    rows = []
    H = data.entropy()
    per_bit = data.dim * math.log(2.0)
    for T in Ts:
        schedule = make_schedule(int(T))
        bound = float(data.expected_bound(schedule, variance).total)
        ce = data.model_cross_entropy(schedule, variance)
        rows.append(
            {
                "schedule": getattr(schedule, "name", "custom"),
                "variance": variance,
                "T": int(T),
                "bound": bound,
                "cross_entropy": ce,
                "entropy": H,
                "gap_model": bound - ce,
                "gap_entropy": bound - H,
                "gap_model_bpd": (bound - ce) / per_bit,
                "gap_entropy_bpd": (bound - H) / per_bit,
            }
        )
    return rows


def format_gap_table(rows: list[dict]) -> str:
    """Plain-text table of :func:`gap_vs_T` rows (nats and bits/dim)."""
    head = (
        f"{'schedule':<32} {'var':<9} {'T':>6} {'bound':>10} {'-log p_θ':>10} {'H':>9} "
        f"{'gap vs p_θ':>12} {'(bpd)':>10} {'gap vs H':>12} {'(bpd)':>10}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['schedule']:<32} {r['variance']:<9} {r['T']:>6} {r['bound']:>10.5f} {r['cross_entropy']:>10.5f} "
            f"{r['entropy']:>9.5f} {r['gap_model']:>12.4e} {r['gap_model_bpd']:>10.3e} "
            f"{r['gap_entropy']:>12.4e} {r['gap_entropy_bpd']:>10.3e}"
        )
    return "\n".join(lines)

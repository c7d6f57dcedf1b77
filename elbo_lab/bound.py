"""The DDPM variational bound of any ε-model, per image, in nats, with an honest standard error.

The bound (E7, guide section "ELBO of diffusion models") is a *negative-log-likelihood bound*
(≥ −log p_θ(x_0), the negative of the ELBO), written with code index k = t − 1 (k = 0..T−1 ↔ paper step t = k + 1):

    L = L_T + Σ_{k=1}^{T−1} L_{k} + L_0,      L_T   = KL(q(x_T|x_0) ‖ N(0, I))                     (prior, no network)
                                              L_{k} = E_q KL(q(x_{t−1}|x_t, x_0) ‖ p_θ(x_{t−1}|x_t)),  t = k + 1 ≥ 2
                                              L_0   = E_q −log p_θ(x_0|x_1)                         (decoder, k = 0)

``terms[:, k]`` holds the k-th summand (column 0 is the decoder L_0).  Each summand is estimated at one
x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε with a fresh ε (one network evaluation), in one of two algebraically equal forms:

- ``form="kl"``: the closed-form Gaussian KL (E1 via :func:`elbo_lab.gaussian.normal_kl`) between the posterior
  (E6) and the model's reverse step;
- ``form="eps"``: w_t ‖ε − ε_θ(x_t, t)‖² + D·KL(N(0, β̃_t) ‖ N(0, σ_t²)) (E8 mean matching + E9 weight; the
  constant vanishes for σ_t² = β̃_t).  For the Gaussian decoder L_0 = w_1 ‖ε − ε_θ‖² + (D/2) log(2π σ_1²).

Decoder (k = 0): ``"discretized"`` −log P(x_0) of K-level data under N(μ_θ(x_1, 1), σ_1²) with bins of width
2/(K−1), outer bins to ±∞, exact normal CDF (:func:`elbo_lab.gaussian.discretized_gaussian_log_likelihood`);
``"gaussian"`` −log N(x_0; μ_θ(x_1, 1), σ_1²) for continuous data (a density: can be negative).  σ_1² is
:func:`elbo_lab.diffusion.reverse_variance` at k = 0 (β_1, or the clipped β̃_2 since β̃_1 = 0).

The model being bounded is a :class:`ModelSpec` (variance convention, decoder, levels, prediction type, x̂_0
clipping); :class:`BoundResult` carries it.  Conventions by name, and which model the number then bounds:

- ``variance="fixed_large"`` is improved-diffusion's FIXED_LARGE (σ_t² = β_t, but σ_1² = β̃_2 at t = 1); the
  project's ``"beta"`` uses β_1 at t = 1.  They bound two models that differ only in the decoder's variance
  (L_0); every other term is identical.  ``"posterior"`` is FIXED_SMALL (β̃_t, σ_1² = β̃_2) in both.
- ``clip_denoised=True`` is the reference's ``clip_denoised`` (``calc_bpd_loop``'s default): x̂_0 clipped to
  [−1, 1] inside every reverse mean -- the bound of the clipped sampler's chain, not of the unclipped one.

A number computed the reference's way (``calc_bpd_loop`` of a β-variance model):
``elbo-lab bound CKPT --estimator full --variance fixed_large --clip-denoised`` (a FIXED_SMALL model: keep
``--variance posterior``).

Estimators of Σ_k L_k (L_T is always exact, no network):

- ``full``: every step for every image, R = ``eps_draws`` (default 2) independent ε draws at each (N·T·R network
  evaluations, batched in chunks of ``chunk_size`` so memory is bounded for any T and N).  Exact over t; a
  Monte Carlo estimate over ε at each step, whose noise it reports: per-image ``stderr`` = √(Σ_k s_k²/R) with
  s_k² the sample variance of the R draws at step k (for R = 2: Σ_k (a_k − b_k)²/4; unbiased, T degrees of
  freedom).  R = 1 (the old behaviour, half the cost) leaves it unestimated: stderr NaN.
- Sampled estimators draw M = ``num_samples`` steps per image, each with a fresh ε.  By default
  (``exact_decoder=True``) the decoder term L_0 is evaluated at every image (``decoder_draws`` = 4 ε draws each,
  so that its variance over ε enters the stderr with 3 degrees of freedom: a take-all stratum of size one; with
  two draws its one-degree-of-freedom variance dominated the interval at large M and the oracle's per-image
  95% intervals covered 92%) and only the
  T − 1 KL steps k = 1..T−1 are sampled: L_0 is the one term that is not a KL, it can be negative, and for
  continuous data it is large and of opposite sign to the rest, which would wreck any sampled estimator's
  variance.  With ``exact_decoder=False`` all T steps are sampled.  Over the T' sampled steps:

  - ``uniform``: k_j ~ U, estimate (1/M) Σ_j T'·L_{k_j}; stderr = sample std / √M.
  - ``stratified``: M/2 contiguous strata of sizes n_s (as equal as possible), two uniform draws a, b in each:
    estimate Σ_s n_s (L_a + L_b)/2, variance estimate Σ_s n_s² (L_a − L_b)²/4 (unbiased; one draw per stratum
    would leave no unbiased variance estimate).
  - ``importance``: k_j ~ p i.i.d. (``proposal``, or estimated ∝ √E[L_k²] from a pilot by
    :func:`estimate_proposal`), estimate (1/M) Σ_j L_{k_j}/p_{k_j}, stderr = sample std / √M (M − 1 degrees of
    freedom).  A step the proposal gives p_k ≥ 1/2 is a *take-all* step (``BoundResult.take_all``): evaluated at
    every image with max(``decoder_draws``, ⌈M p_k⌉) ε draws, like L_0, and the proposal renormalised over the
    rest (:func:`_take_all_steps`).  ``stratified_importance=True`` (even M): k = F_p⁻¹(u) with u stratified into
    S = M/2 equal intervals of [0, 1), two draws in each; estimate Σ_s (1/S)(L_a/p_a + L_b/p_b)/2, variance estimate
    Σ_s (1/S²)(L_a/p_a − L_b/p_b)²/4 (unbiased) -- a smaller variance at large M, but S one-degree-of-freedom
    variance estimates whose Student-t interval over-covers (95.5–98.5% for the mean), so it is not the
    default.  Coverage of every interval: benchmarks/bench_bound.py part (c).

All sampled estimators are unbiased for E_ε[Σ_k L_k]; their stderr is an unbiased variance estimate covering both
the step and the ε noise.  Only ``importance``'s 95% interval is measured to cover (93.5–96.5% per image and for the
mean, M = 8..128, on the Gaussian oracle and two trained digits DDPMs).  ``uniform`` and ``stratified`` (equal-width
strata) cannot give an honest interval from their own draws at these M: the steps that hold half the bound
(k ≲ 30, and the last step of a cosine schedule) are drawn so rarely that most runs never see them, and then
both the estimate and its stderr are too small together (measured coverage 42–89%).
Units: nats; bits/dim = nats/(D ln 2) (:meth:`BoundResult.bits_per_dim`).
Tests: ``tests/test_bound.py`` (three routes agree; unbiasedness and interval coverage; decoder; bad input).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import torch

from . import diffusion as D
from .errors import ModelOutputError
from .gaussian import discretized_gaussian_log_likelihood, normal_kl, normal_log_prob
from .schedule import NoiseSchedule

__all__ = [
    "BoundResult",
    "ModelSpec",
    "bound_term",
    "estimate_proposal",
    "satterthwaite_dof",
    "keyed_noise",
    "l_simple",
    "noise_seeds",
    "pilot_proposal",
    "pilot_steps",
    "prior_term",
    "simple_term",
    "trajectory_bound",
    "variational_bound",
]

Estimator = Literal["full", "uniform", "stratified", "importance"]
DEFAULT_CHUNK = 1024
DEFAULT_SAMPLES = 32
_LOG_2PI = math.log(2.0 * math.pi)
VARIANCES = ("posterior", "beta", "fixed_large", "learned")
DECODERS = ("discretized", "gaussian")
PREDICTIONS = ("epsilon", "sample", "v")


# ---------------------------------------------------------------------------------------------------------------
# The model being bounded
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """What defines the model p_θ whose NLL the bound bounds -- besides the network and the noise schedule.

    Two runs with different specs bound *different models* (both bounds are valid, of different p_θ), so a number
    is only meaningful together with its spec: :class:`BoundResult` carries it, the CLI prints it
    (:meth:`describe`) and writes it to JSON (:meth:`to_dict`).  Estimator knobs (estimator, M, seed, chunking)
    are *not* part of it: they change the estimate's noise, never its expectation.

    - ``variance``: σ_t² of p_θ(x_{t−1}|x_t) -- "posterior" (β̃_t, σ_1² = β̃_2; improved-diffusion FIXED_SMALL),
      "beta" (β_t at every t, σ_1² = β_1: this project's training convention and diffusers' fixed_large),
      "fixed_large" (improved-diffusion FIXED_LARGE: β_t for t ≥ 2, σ_1² = β̃_2 -- published numbers of β-variance
      models use it; it differs from "beta" only in the decoder L_0), "learned" (the model returns (ε̂, v);
      improved-diffusion LEARNED_RANGE), or a callable k ↦ σ_t².  See :func:`elbo_lab.diffusion.reverse_variance`.
    - ``decoder``: p_θ(x_0|x_1) -- "discretized" (K-level data, bins of width 2/(K−1)) or "gaussian" (a density).
    - ``levels``: K for the discretized decoder (None for "gaussian").
    - ``prediction``: what the network outputs -- "epsilon" (ε̂), "sample" (x̂_0) or "v" (v̂ = √ᾱ_t ε − √(1−ᾱ_t)
      x_0, Salimans & Ho 2022); the engine turns it into ε̂ (:func:`_to_eps`).
    - ``clip_denoised``: the reference's ``clip_denoised`` (improved-diffusion ``calc_bpd_loop`` default True):
      x̂_0(x_t) is clipped to [−1, 1] before it forms the mean μ̃_t(x̂_0, x_t) of every reverse step and the
      decoder mean at t = 1.  The number is then the NLL bound of *that* model -- the chain its clipped sampler
      (``p_sample(clip_denoised=True)``) draws from; without clipping, of the unclipped chain.  Both are valid bounds
      of different models.
    - ``source``: free text naming where the spec came from (e.g. "ddpm checkpoint"), for the report only.
    """

    variance: str | Callable = "posterior"
    decoder: str = "discretized"
    levels: int | None = None
    prediction: str = "epsilon"
    clip_denoised: bool = False
    source: str = ""

    def __post_init__(self):
        if not (callable(self.variance) or self.variance in VARIANCES):
            raise ValueError(f"variance must be one of {', '.join(VARIANCES)} or a callable, got {self.variance!r}")
        if self.decoder not in DECODERS:
            raise ValueError(f"decoder must be 'discretized' or 'gaussian', got {self.decoder!r}")
        if self.decoder == "discretized" and (
            self.levels is None or isinstance(self.levels, bool) or not isinstance(self.levels, int) or self.levels < 2
        ):
            raise ValueError(f"decoder='discretized' needs levels=K (an int >= 2), got {self.levels!r}")
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {', '.join(PREDICTIONS)}, got {self.prediction!r}")
        if not isinstance(self.clip_denoised, bool):
            raise ValueError(f"clip_denoised must be True or False, got {self.clip_denoised!r}")

    @property
    def variance_name(self) -> str:
        return "custom (callable)" if callable(self.variance) else self.variance

    def describe(self) -> str:
        """One line naming the model: variance convention, decoder, levels, prediction (and x̂_0 clipping)."""
        dec = f"discretized decoder on {self.levels} levels" if self.decoder == "discretized" else "Gaussian decoder"
        clip = "x̂_0 clipped to [-1, 1]" if self.clip_denoised else "x̂_0 not clipped"
        return f"{self.variance_name} variance, {dec}, {self.prediction} prediction, {clip}"

    def to_dict(self) -> dict:
        """JSON-ready fields (a callable variance is written as "custom (callable)" and cannot be read back)."""
        return {
            "variance": self.variance_name,
            "decoder": self.decoder,
            "levels": self.levels,
            "prediction": self.prediction,
            "clip_denoised": self.clip_denoised,
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, d: dict) -> ModelSpec:
        """The inverse of :meth:`to_dict` (unknown keys are an error)."""
        names = {f for f in cls.__dataclass_fields__}
        extra = set(d) - names
        if extra:
            raise ValueError(f"unknown model-spec fields: {', '.join(sorted(extra))}")
        return cls(**d)

    @classmethod
    def from_ddpm_checkpoint(cls, ckpt: dict) -> ModelSpec:
        """The spec of a project DDPM checkpoint (``elbo-lab train ddpm``): its training variance, the discretized
        decoder on its data's levels; both output parameterizations ("eps", "categorical") hand the engine ε̂."""
        return cls(
            variance=ckpt["config"]["variance"],
            decoder="discretized",
            levels=int(ckpt["data"]["levels"]),
            prediction="epsilon",
            source="elbo-lab DDPM checkpoint",
        )


def _resolve_spec(model, variance, decoder, levels) -> ModelSpec:
    """The spec from ``model=`` or from the individual keywords (defaults "posterior", "discretized"), not both."""
    if model is not None:
        if not isinstance(model, ModelSpec):
            raise ValueError(f"model must be a ModelSpec, got {type(model).__name__}")
        if variance is not None or decoder is not None or levels is not None:
            raise ValueError("give either model=ModelSpec(...) or variance/decoder/levels, not both")
        return model
    return ModelSpec(
        variance="posterior" if variance is None else variance, decoder=decoder or "discretized", levels=levels
    )


# ---------------------------------------------------------------------------------------------------------------
# Noise keyed by (image, step, draw)
# ---------------------------------------------------------------------------------------------------------------

_GOLDEN = 0x9E3779B97F4A7C15
_M64 = (1 << 64) - 1
# streams: independent noise for each use, so estimators never share random numbers by accident
STREAM_FULL, STREAM_SAMPLED, STREAM_DECODER, STREAM_STEPS, STREAM_PILOT = 1, 2, 3, 4, 5


def _splitmix(z: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser (Steele, Lea & Flood 2014) on uint64 arrays: a bijective 64-bit mixer."""
    z = z ^ (z >> np.uint64(30))
    z = z * np.uint64(0xBF58476D1CE4E5B9)
    z = z ^ (z >> np.uint64(27))
    z = z * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def noise_seeds(seed: int, stream: int, image_ids, steps, draws) -> np.ndarray:
    """64-bit seeds, one per row, as a pure function of (seed, stream, image id, code index k, draw): (B,) uint64.

    This is what makes a result for an image independent of the batch it was evaluated in, of the chunk size,
    of the other images in the run and of the process (rank) that evaluated it: the ε used for image i at step k
    (draw j) depends on those numbers only.  Each part is folded in with splitmix64 (h ← mix(h ⊕ (part + φ))).
    """
    parts = [np.asarray(p, dtype=np.int64).astype(np.uint64) for p in (image_ids, steps, draws)]
    b = np.broadcast_shapes(*(p.shape for p in parts))
    with np.errstate(over="ignore"):
        h = _splitmix(np.full(b, (int(seed) & _M64) ^ _GOLDEN, dtype=np.uint64))
        h = _splitmix(h ^ np.uint64((int(stream) + _GOLDEN) & _M64))
        for p in parts:
            h = _splitmix(h ^ (np.broadcast_to(p, b) + np.uint64(_GOLDEN)))
    return h


def keyed_noise(seed: int, stream: int, image_ids, steps, draws, shape, device=None) -> torch.Tensor:
    """Standard normal ε, (B, *shape) float64: row b drawn from a CPU generator seeded with
    :func:`noise_seeds` (seed, stream, image_ids[b], steps[b], draws[b]) -- the same numbers on any device, in any
    batch, on any rank.  Cost: a generator re-seed per row (~6 µs at D = 64, ~70 µs at D = 3072 on one core)."""
    seeds = noise_seeds(seed, stream, image_ids, steps, draws)
    out = torch.empty((len(seeds), *shape), dtype=torch.float64)
    g = torch.Generator()
    for b, s in enumerate(seeds.tolist()):
        g.manual_seed(s)
        torch.randn(tuple(shape), generator=g, dtype=torch.float64, out=out[b])
    return out if device is None else out.to(device)


def _seed(generator) -> int:
    """An int seed: as given, 0 for None, or drawn once from a torch.Generator (so old callers keep working)."""
    if generator is None:
        return 0
    if isinstance(generator, torch.Generator):
        return int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
    if isinstance(generator, bool) or not isinstance(generator, (int, np.integer)):
        raise ValueError(f"generator must be a torch.Generator, an int seed or None, got {type(generator).__name__}")
    return int(generator)


def _image_ids(image_ids, N: int) -> np.ndarray:
    if image_ids is None:
        return np.arange(N, dtype=np.int64)
    ids = np.asarray(torch.as_tensor(image_ids).cpu(), dtype=np.int64).reshape(-1)
    if ids.shape[0] != N:
        raise ValueError(f"shape mismatch: {ids.shape[0]} image_ids for {N} images")
    if ids.min(initial=0) < 0 or len(np.unique(ids)) != N:
        raise ValueError("image_ids must be distinct non-negative ints (the images' indices in the dataset)")
    return ids


@dataclass
class BoundResult:
    """Per-image values of the variational bound (a negative-log-likelihood bound, ≥ −log p_θ(x_0)).

    ``units`` is "nats" (or "bits/dim" after :meth:`bits_per_dim`).  ``terms`` (N, T): column k = code index
    (column 0 = L_0); for sampled estimators the mean of the one-sample values at the steps drawn, the mean of
    the R draws at L_0 and at take-all steps, and NaN at steps not drawn (``total`` is never NaN).  ``stderr``
    (N,): the estimator's standard error per image (for ``full``: of its ε noise; NaN with one draw per step).
    ``n_evals``: network evaluations, pilot included (``n_pilot_evals``).  ``proposal``: the importance proposal
    as given or estimated (before take-all steps are taken out: it can be passed back as ``proposal=``).
    """

    total: torch.Tensor  # (N,)
    prior: torch.Tensor  # (N,) L_T
    decoder: torch.Tensor  # (N,) L_0 (NaN only with exact_decoder=False when k = 0 was never drawn)
    terms: torch.Tensor  # (N, T)
    stderr: torch.Tensor  # (N,)
    n_evals: int
    dim: int
    estimator: str = "full"
    units: str = "nats"
    num_samples: int | None = None  # steps per image (sampled estimators)
    n_pilot_evals: int = 0
    proposal: torch.Tensor | None = field(default=None, repr=False)  # (T,) importance proposal
    model: ModelSpec | None = None  # the model being bounded (the spec the number belongs to)
    seed: int | None = None  # the int seed all noise and step choices were keyed by
    eps_draws: int | None = None  # ``full``: ε draws per (image, step)
    dof: torch.Tensor | None = field(default=None, repr=False)  # (N,) Welch–Satterthwaite dof of stderr²
    decoder_draws: int | None = None  # sampled estimators with exact_decoder: ε draws of L_0 per image
    stratified_importance: bool = False  # importance with stratified inverse-CDF draws (else i.i.d.)
    take_all: list[int] = field(default_factory=list)  # importance: steps evaluated at every image (p_k ≥ 1/2)

    @property
    def N(self) -> int:
        return int(self.total.shape[0])

    def mean(self) -> float:
        """The dataset-mean bound, in ``units``."""
        return float(self.total.mean())

    def mean_stderr(self, over: Literal["images", "estimator"] = "images") -> float:
        """Standard error of :meth:`mean`.

        ``over="images"``: std of the per-image totals / √N -- the standard error of the mean as an estimate of
        the expected bound under the data distribution (images i.i.d.); it includes the estimator's own noise
        (steps and ε).  ``over="estimator"``: √(Σ stderr²)/N -- the error from sampling steps (and ε) for these
        fixed images only (for ``full``: its ε noise; NaN with one draw per step).
        """
        if over == "estimator":
            return float(self.stderr.pow(2).sum().sqrt() / self.N)
        if over != "images":
            raise ValueError(f"over must be 'images' or 'estimator', got {over!r}")
        if self.N < 2:
            raise ValueError("mean_stderr(over='images') needs at least 2 images")
        return float(self.total.std() / math.sqrt(self.N))

    def mean_dof(self) -> float:
        """Welch–Satterthwaite degrees of freedom of mean_stderr("estimator")²: (Σ_i s_i²)² / Σ_i s_i⁴/ν_i."""
        if self.dof is None:
            return math.inf
        return float(satterthwaite_dof(self.stderr.pow(2).sum(), (self.stderr.pow(4) / self.dof).sum()))

    def mean_ci(self, level: float = 0.95) -> tuple[float, float]:
        """Interval for the mean bound of *these images* from the estimator's noise: mean ± t_ν·s.e., with
        s.e. = mean_stderr("estimator") and ν = :meth:`mean_dof` (Student t: few strata give few degrees of
        freedom; ν → ∞ gives ±1.96 s.e. at 95%).  Coverage measured in benchmarks/bench_bound.py part (c)."""
        from scipy.stats import norm, t

        se, nu = self.mean_stderr("estimator"), self.mean_dof()
        q = float(t.ppf(0.5 + level / 2, nu) if math.isfinite(nu) else norm.ppf(0.5 + level / 2))
        return self.mean() - q * se, self.mean() + q * se

    def bits_per_dim(self) -> BoundResult:
        """The same result in bits/dim: every value divided by D ln 2."""
        if self.units == "bits/dim":
            return self
        c = 1.0 / (self.dim * math.log(2.0))
        return replace(
            self,
            total=self.total * c,
            prior=self.prior * c,
            decoder=self.decoder * c,
            terms=self.terms * c,
            stderr=self.stderr * c,
            units="bits/dim",
        )


# ---------------------------------------------------------------------------------------------------------------
# The terms
# ---------------------------------------------------------------------------------------------------------------


def prior_term(schedule: NoiseSchedule, x0: torch.Tensor) -> torch.Tensor:
    """L_T = KL(q(x_T|x_0) ‖ N(0, I)) = Σ_dims KL(N(√ᾱ_T x_0, 1 − ᾱ_T) ‖ N(0, 1)), (N,) nats, no network.

    Derivation: E5 ``forward_marginal`` (q(x_T|x_0)) and E1 ``gaussian_kl``.  Test: tests/test_bound.py.
    """
    mean, var = D.q_marginal(schedule, x0, schedule.T - 1)
    return normal_kl(mean, var, torch.zeros_like(mean), torch.ones_like(mean)).flatten(1).sum(1)


def _call_model(eps_model: Callable, xt: torch.Tensor, k: torch.Tensor, model_dtype) -> tuple:
    """ε̂ (and v if the model returns (ε̂, v)) as float64, checked for shape and finiteness."""
    out = eps_model(xt.to(model_dtype), k)
    v = None
    if isinstance(out, (tuple, list)):
        if len(out) != 2:
            raise ValueError(f"eps_model must return ε̂ or (ε̂, v); got a {type(out).__name__} of {len(out)}")
        out, v = out
    if not torch.is_tensor(out) or out.shape != xt.shape:
        shape = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
        raise ValueError(f"shape mismatch: eps_model returned {shape} for x_t of shape {tuple(xt.shape)}")
    if not bool(torch.isfinite(out).all()):
        raise ModelOutputError("eps_model returned NaN or Inf (non-finite ε̂)")
    if v is not None:
        if not torch.is_tensor(v) or v.shape != xt.shape:
            raise ValueError(f"shape mismatch: eps_model's variance output v must have shape {tuple(xt.shape)}")
        if not bool(torch.isfinite(v).all()):
            raise ModelOutputError("eps_model returned a non-finite variance output v")
        v = v.to(torch.float64)
    return out.to(torch.float64), v


def bound_term(
    eps_model: Callable,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    k: torch.Tensor,
    noise: torch.Tensor,
    *,
    model: ModelSpec | None = None,
    variance=None,
    decoder: str | None = None,
    levels: int | None = None,
    form: str = "kl",
    model_dtype=None,
) -> torch.Tensor:
    """One-sample estimate of the k-th summand of the bound for each image, (B,) float64 nats.

    Row b: x_t = √ᾱ_t x0[b] + √(1−ᾱ_t) noise[b] at code index k[b] (paper step t = k + 1), one network
    evaluation, then L_{k} (t ≥ 2, the KL in ``form`` "kl" or "eps") or L_0 (k = 0, the decoder).  Differentiable
    (reused by training losses).  Inputs are not re-validated here beyond shapes, timesteps and the model output
    (:func:`variational_bound` validates the data).  The model being bounded: ``model`` (a :class:`ModelSpec`),
    or the keywords ``variance`` ("posterior" | "beta" | "learned" (model returns (ε̂, v), σ² =
    :func:`elbo_lab.diffusion.reverse_variance_from_v`) | callable k ↦ σ_t² (B,); default "posterior"),
    ``decoder`` (default "discretized") and ``levels``.
    """
    spec = _resolve_spec(model, variance, decoder, levels)
    variance, decoder, levels = spec.variance, spec.decoder, spec.levels
    s = schedule
    x0 = x0.to(torch.float64)
    k = D.timesteps(s, k, x0.shape[0])
    if k.ndim == 0:
        k = k.expand(x0.shape[0])
    noise = noise.to(torch.float64)
    xt = D.q_sample(s, x0, k, noise)  # (B, ...)
    out_hat, v = _call_model(eps_model, xt, k, model_dtype or x0.dtype)
    eps_hat = _to_eps(s, xt, k, out_hat, spec.prediction, spec.clip_denoised)
    sigma2 = _reverse_variance(s, k, variance, v, xt)  # broadcastable to (B, ...)
    first = k == 0  # (B,) rows whose term is the decoder L_0

    if form == "kl":
        mu_q, var_q = D.q_posterior(s, x0, xt, k)
        var_q = torch.where(_rows(first, xt), torch.ones_like(var_q), var_q)  # β̃_1 = 0: no KL at k = 0
        mu_p = D.reverse_mean(s, xt, k, eps_hat)
        out = normal_kl(mu_q, var_q, mu_p, sigma2).flatten(1).sum(1)
    elif form == "eps":
        if not isinstance(variance, str) or variance == "learned":
            raise ValueError("form='eps' needs a fixed variance ('posterior', 'beta' or 'fixed_large')")
        dim = x0[0].numel()
        w = D.eps_weight(s, variance)[k]  # (B,)
        var_q = s.posterior_variance[k]
        sigma2_k = D.reverse_variance(s, k, variance)
        const = dim * normal_kl(torch.zeros_like(var_q), torch.where(first, sigma2_k, var_q), 0.0, sigma2_k)
        out = w * (noise - eps_hat).pow(2).flatten(1).sum(1) + const
        if decoder == "gaussian":  # L_0 = w_1 ‖ε − ε̂‖² + (D/2) log(2π σ_1²): E9 at t = 1
            out = torch.where(first, out + 0.5 * dim * (_LOG_2PI + sigma2_k.log()), out)
    else:
        raise ValueError(f"form must be 'kl' or 'eps', got {form!r}")

    if bool(first.any()) and not (form == "eps" and decoder == "gaussian"):
        idx = first.nonzero().squeeze(1)
        mu0 = D.reverse_mean(s, xt[idx], k[idx], eps_hat[idx])  # decoder mean μ_θ(x_1, 1)
        l0 = _decoder_nll(x0[idx], mu0, sigma2[idx], decoder, levels)
        out = out.index_put((idx,), l0)
    if not bool(torch.isfinite(out).all()):  # e.g. ε̂ = 1e200: finite outputs whose squares overflow
        raise ModelOutputError(
            f"the bound term is not finite: the model's outputs overflow (max |ε̂| = {eps_hat.abs().max().item():.3g})"
        )
    return out


def _to_eps(s: NoiseSchedule, xt, k, out, prediction: str, clip_denoised: bool = False) -> torch.Tensor:
    """ε̂ from the network output: as is ("epsilon"); from x̂_0 by :func:`elbo_lab.diffusion.predict_eps`
    ("sample"); from v̂ = √ᾱ_t ε − √(1−ᾱ_t) x_0 as ε̂ = √ᾱ_t v̂ + √(1−ᾱ_t) x_t ("v": substitute x_0 =
    (x_t − √(1−ᾱ_t) ε)/√ᾱ_t into v and use ᾱ_t + (1−ᾱ_t) = 1).

    ``clip_denoised``: ε̂ is replaced by the ε implied by the clipped x̂_0, ε̂' = predict_eps(x_t, clip(x̂_0, −1, 1)).
    The engine's mean μ_θ(x_t, ε̂') (E6 ``mean_eps``, i.e. ``mean`` at x_0 = ``x0_from_eps``(ε̂')) is then exactly
    the reference's clipped mean μ̃_t(clip(x̂_0), x_t), at t = 1 the decoder mean clip(x̂_0); rows whose x̂_0 is
    inside [−1, 1] keep their ε̂ bit for bit.  Tests: tests/test_bound.py (``test_prediction_types_...``,
    ``test_clip_denoised_term_vs_sympy``)."""
    if prediction == "epsilon":
        eps = out
    elif prediction == "sample":
        eps = D.predict_eps(s, xt, k, out)
    else:
        a = s.alpha_bars[k].sqrt().reshape(k.shape + (1,) * (xt.ndim - 1))
        sd = s.one_minus_alpha_bars[k].sqrt().reshape(k.shape + (1,) * (xt.ndim - 1))
        eps = a * out + sd * xt
    if clip_denoised:
        x0 = out if prediction == "sample" else D.predict_x0(s, xt, k, eps)
        inside = (x0 >= -1.0) & (x0 <= 1.0)
        eps = torch.where(inside, eps, D.predict_eps(s, xt, k, x0.clamp(-1.0, 1.0)))
    return eps


def _rows(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return mask.reshape(mask.shape + (1,) * (like.ndim - 1))


def _reverse_variance(s: NoiseSchedule, k: torch.Tensor, variance, v, xt: torch.Tensor) -> torch.Tensor:
    """σ_t² per row, shaped to broadcast against x_t (B, ...)."""
    if variance == "learned":
        if v is None:
            raise ValueError("variance='learned' needs an eps_model that returns (ε̂, v)")
        return D.reverse_variance_from_v(s, k, v)
    if callable(variance):
        sigma2 = torch.as_tensor(variance(k), dtype=torch.float64, device=xt.device)
        if sigma2.shape != k.shape or not bool((sigma2 > 0).all()) or not bool(torch.isfinite(sigma2).all()):
            raise ValueError(f"a variance callable must return finite σ² > 0 of shape {tuple(k.shape)}")
    else:
        sigma2 = D.reverse_variance(s, k, variance)
    return sigma2.reshape(sigma2.shape + (1,) * (xt.ndim - 1))


def _decoder_nll(x0, mean, var, decoder: str, levels: int | None) -> torch.Tensor:
    """L_0 = −log p_θ(x_0|x_1) summed over dimensions, (B,) nats."""
    if decoder == "discretized":
        ll = discretized_gaussian_log_likelihood(x0, mean, var, levels)
    elif decoder == "gaussian":
        ll = normal_log_prob(x0, mean, var)
    else:
        raise ValueError(f"decoder must be 'discretized' or 'gaussian', got {decoder!r}")
    return -ll.flatten(1).sum(1)


# ---------------------------------------------------------------------------------------------------------------
# Estimators
# ---------------------------------------------------------------------------------------------------------------


def _generator(generator, device) -> torch.Generator:
    """A torch.Generator: as given, seeded from an int, or seed 0 (never the global RNG)."""
    if isinstance(generator, torch.Generator):
        return generator
    if generator is None:
        generator = 0
    if isinstance(generator, bool) or not isinstance(generator, int):
        raise ValueError(f"generator must be a torch.Generator, an int seed or None, got {type(generator).__name__}")
    return torch.Generator(device=device).manual_seed(generator)


def _validate_data(x0: torch.Tensor, decoder: str, levels: int | None) -> None:
    if not torch.is_tensor(x0) or not x0.is_floating_point():
        raise ValueError("x0 must be a floating-point tensor of shape (N, ...)")
    if x0.ndim < 2 or x0.shape[0] == 0 or x0[0].numel() == 0:
        raise ValueError(f"x0 must have shape (N, ...) with N >= 1 images of D >= 1 values, got {tuple(x0.shape)}")
    if not bool(torch.isfinite(x0).all()):
        raise ValueError("x0 contains NaN or Inf")
    if decoder == "discretized":
        if levels is None or isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
            raise ValueError(f"decoder='discretized' needs levels=K (an int >= 2), got {levels!r}")
        lo, hi = float(x0.min()), float(x0.max())
        if lo < -1.0 - 1e-6 or hi > 1.0 + 1e-6:
            raise ValueError(f"data outside [-1, 1] for the discretized decoder: values in [{lo:.4g}, {hi:.4g}]")
        grid = (x0.to(torch.float64) + 1.0) * (levels - 1) / 2.0
        off = float((grid - grid.round()).abs().max())
        if off > 1e-4:
            raise ValueError(
                f"data off the grid of {levels} levels in [-1, 1] for the discretized decoder "
                f"(off by up to {off:.3g} bins); pass the right levels or decoder='gaussian'"
            )
    elif decoder != "gaussian":
        raise ValueError(f"decoder must be 'discretized' or 'gaussian', got {decoder!r}")


class _Progress:
    """A tqdm bar over network evaluations on stderr (only if ``enabled`` and stderr is a terminal), else nothing."""

    def __init__(self, enabled: bool, total: int, desc: str):
        self.bar = None
        if enabled and total > 0:
            import sys

            from tqdm import tqdm

            if sys.stderr.isatty():
                self.bar = tqdm(total=total, desc=desc, unit="eval", unit_scale=True, file=sys.stderr, leave=False)

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _evaluate(eps_model, schedule, x0, rows, ids, ks, draws, seed, stream, chunk_size, kw, progress=None):
    """L_k for P (row, step, draw) triples, ``chunk_size`` at a time (no (P, ...) tensor is ever built), (P,)
    float64.  ``rows`` index x0; the ε of triple p is :func:`keyed_noise` (seed, stream, ids[rows[p]], ks[p],
    draws[p]): it does not depend on the chunking, the batch or the other images."""
    rows, ks, draws = (torch.as_tensor(v, dtype=torch.long).reshape(-1) for v in (rows, ks, draws))
    P = rows.shape[0]
    out = torch.empty(P, dtype=torch.float64, device=x0.device)
    shape = tuple(x0.shape[1:])
    for start in range(0, P, chunk_size):
        sl = slice(start, min(start + chunk_size, P))
        r, k = rows[sl], ks[sl]
        noise = keyed_noise(seed, stream, ids[r.numpy()], k.numpy(), draws[sl].numpy(), shape, x0.device)
        out[sl] = bound_term(eps_model, schedule, x0[r.to(x0.device)], k.to(x0.device), noise, **kw)
        if progress is not None:
            progress.update(sl.stop - sl.start)
    return out


def _image_generator(seed: int, image_id: int) -> torch.Generator:
    """The CPU generator that draws the steps of one image: keyed by (seed, image), like the noise."""
    return torch.Generator().manual_seed(int(noise_seeds(seed, STREAM_STEPS, image_id, 0, 0)))


def _sample_steps(estimator, lo, T, ids, M, proposal, seed, strata=False) -> tuple[torch.Tensor, torch.Tensor]:
    """(k, weight) each (N, M) on the CPU: code indices drawn from {lo..T−1} for each image (from the image's own
    keyed generator) and the factor that turns L_k into an unbiased one-draw estimate of Σ_{k=lo}^{T−1} L_k."""
    n_steps, N = T - lo, len(ids)
    k = torch.empty((N, M), dtype=torch.long)
    if estimator == "uniform":
        for i, image in enumerate(ids.tolist()):
            k[i] = lo + torch.randint(0, n_steps, (M,), generator=_image_generator(seed, image))
        return k, torch.full((N, M), float(n_steps), dtype=torch.float64)
    if estimator == "importance":  # proposal (T,) with proposal[:lo] = 0
        p = proposal.cpu()
        if not strata:  # plain importance sampling, k_j ~ p i.i.d.
            for i, image in enumerate(ids.tolist()):
                k[i] = torch.multinomial(p, M, replacement=True, generator=_image_generator(seed, image))
            return k, 1.0 / p[k]
        # stratified importance (even M) -- inverse-CDF draws k = F⁻¹(u) with u stratified into S = M/2 equal
        # intervals [s/S, (s+1)/S), two in each; weight 1/(S p_k) (columns 2s, 2s+1 = stratum s, as for stratified)
        S = M // 2
        cdf = p.cumsum(0)
        positive = (p > 0).nonzero().squeeze(1)  # u rounding to 1 must not land on a step with p = 0 (weight ∞)
        first, last = int(positive.min()), int(positive.max())
        base = torch.arange(S, dtype=torch.float64).repeat_interleave(2)
        for i, image in enumerate(ids.tolist()):
            u = (base + torch.rand(M, generator=_image_generator(seed, image), dtype=torch.float64)) / S
            k[i] = torch.searchsorted(cdf, u * float(cdf[-1]), right=True).clamp(first, last)
        return k, 1.0 / (S * p[k])
    # stratified: S = M/2 strata [e_s, e_{s+1}) of {lo..T−1}, two draws in each; columns 2s and 2s+1 = stratum s
    S = M // 2
    edges = lo + torch.linspace(0, n_steps, S + 1, dtype=torch.float64).round().long()  # (S+1,)
    sizes = (edges[1:] - edges[:-1]).repeat_interleave(2)  # (M,)
    lows = edges[:-1].repeat_interleave(2)
    u = torch.stack([torch.rand(M, generator=_image_generator(seed, i), dtype=torch.float64) for i in ids.tolist()])
    k = lows + torch.clamp((u * sizes).long(), max=sizes - 1)
    return k, sizes.to(torch.float64).expand(N, M).clone()


def _combine(estimator, values, weights, strata=False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(estimate, variance, Σ_j v_j²/ν_j) per image from the (N, M) one-sample terms and their weights; the last
    is what the Welch–Satterthwaite degrees of freedom ν = (Σ v_j)² / Σ v_j²/ν_j of the variance need."""
    y = values * weights  # (N, M)
    M = y.shape[1]
    if estimator == "stratified" or (estimator == "importance" and strata):
        a, b = y[:, 0::2], y[:, 1::2]  # (N, S) the two draws (weighted) in each stratum
        v = (a - b).pow(2) / 4  # (N, S) one degree of freedom each
        return ((a + b) / 2).sum(1), v.sum(1), v.pow(2).sum(1)
    var = y.var(1) / M
    return y.mean(1), var, var.pow(2) / (M - 1)


def satterthwaite_dof(var: torch.Tensor, var_sq_over_dof: torch.Tensor) -> torch.Tensor:
    """ν = (Σ v_j)² / Σ v_j²/ν_j (Welch 1947, Satterthwaite 1946), elementwise from the two sums; inf where the
    variance is 0 (nothing random)."""
    return torch.where(
        var_sq_over_dof > 0, var.pow(2) / var_sq_over_dof.clamp(min=1e-300), torch.full_like(var, math.inf)
    )


def _check_proposal(proposal, T: int, lo: int) -> torch.Tensor:
    """The proposal over code indices (T,), restricted to k ≥ lo and renormalised."""
    p = torch.as_tensor(proposal, dtype=torch.float64).flatten().clone()
    if p.shape[0] != T:
        raise ValueError(f"shape mismatch: proposal has {p.shape[0]} entries for T = {T} steps")
    p[:lo] = 0.0
    if not bool(torch.isfinite(p).all()) or not bool((p[lo:] > 0).all()):
        raise ValueError(
            f"proposal must be finite and > 0 at every sampled step k >= {lo} (else the estimate is biased)"
        )
    return p / p.sum()


TAKE_ALL = 0.5  # a step the proposal gives at least this probability is evaluated at every image instead


def _take_all_steps(p: torch.Tensor) -> tuple[torch.Tensor, list[tuple[int, float]]]:
    """(proposal over the remaining steps, [(take-all step, its probability when taken)]): while some step has
    p_k ≥ 1/2, take it out of the sampled set (it is then evaluated at every image, like L_0, with at least the
    ⌈M p_k⌉ ε draws it would have got on average) and renormalise the rest.

    Why: with p_k ≥ 1/2 most draws repeat one term, and the rest of the bound is seen in only a few draws -- when
    none lands there, every draw has the same value, the sample variance is ~0 and the interval misses (a model
    with 94% of its bound in its last step: p = 0.89, 8 draws, the 95% interval covered 43%).  Evaluating that step
    with certainty is the survey-sampling rule for a unit whose inclusion probability would exceed one."""
    p = p.clone()
    taken: list[tuple[int, float]] = []
    while float(p.max()) >= TAKE_ALL and float(p.max()) < 1.0:
        k = int(p.argmax())
        taken.append((k, float(p[k])))
        p[k] = 0.0
        p = p / p.sum()
    return p, sorted(taken)


def pilot_steps(T: int, grid: int | None) -> torch.Tensor:
    """The code indices a pilot evaluates: all T if ``grid`` is None or ≥ T, else 0, ~``grid`` − 1 steps
    geometrically spaced in 1..T−1 (dense at small k, where the terms change fastest) and the last two steps
    T−2, T−1.  T−2 is there because the last step can be isolated: with a cosine schedule (β_T clipped to 0.999)
    a trained model's L_{T−1} was ~40 nats, 20% of its bound, while L_{T−2} was ~0.01; interpolating from the
    grid point before it spread that step's proposal mass over the ~90 steps in between (62% of all the mass on
    steps holding < 1% of the bound)."""
    if grid is None or grid >= T or T < 3:
        return torch.arange(T)
    if isinstance(grid, bool) or not isinstance(grid, int) or grid < 2:
        raise ValueError(f"grid must be an int >= 2 or None, got {grid!r}")
    inner = np.unique(np.round(np.geomspace(1, T - 1, grid - 1)).astype(np.int64))
    return torch.from_numpy(np.union1d(np.concatenate([[0], inner]), [T - 2, T - 1]))


def estimate_proposal(
    eps_model: Callable,
    schedule: NoiseSchedule,
    x0_pilot: torch.Tensor,
    *,
    grid: int | None = 64,
    mix: float = 0.01,
    generator=None,
    model: ModelSpec | None = None,
    variance=None,
    decoder: str | None = None,
    levels: int | None = None,
    form: str = "kl",
    model_dtype=None,
    chunk_size: int = DEFAULT_CHUNK,
    image_ids=None,
    draws: int = 4,
) -> torch.Tensor:
    """Importance proposal p_k ∝ √(mean over pilot images of L_k²) (the loss-aware sampler of Nichol & Dhariwal
    2021, used here for evaluation), mixed with the uniform law: p = (1 − mix)·p_pilot + mix/T, (T,) float64
    summing to 1, index k = t − 1.  The pilot evaluates L_k with ``draws`` ε draws on the steps of
    :func:`pilot_steps` (``grid``; all T if None) for every pilot image -- N_pilot·len(steps)·draws network
    evaluations (4 images x 53 steps x 4 draws = 848 at T = 1000).  Four draws, not one: at small t a
    discrete-data model's terms are ~0 with rare large values, and √E[L_k²] from 4 images x 1 draw missed them (a
    learned-variance digits DDPM got p_5·T = 0.16 for a term holding 3.6× its share; the mean's 95% interval then
    covered 92% at M = 128, with mean z −0.29 from rare large weights; with 4 draws 96.5%, z −0.02).  It interpolates
    √E[L_k²] *geometrically* in between (linearly in log √E[L_k²]; a grid value of 0 counts as 1e-300): the
    terms fall by ~4 orders of magnitude over k, and linear interpolation between two grid points a decade
    apart puts up to ~10× too much mass on the steps next to the smaller one.  ``mix`` > 0 keeps every weight
    1/(T p_k) ≤ 1/mix; it costs variance, since draws from the uniform part mostly land on steps whose terms are
    ~0 and give y ≈ 0: on the Gaussian oracle (T = 1000, M = 8) mix = 0.05 gave 12.9× fewer evaluations than
    ``full`` at equal per-image s.e. and 0.01 gave 27× (benchmarks/bench_bound.py part (c)).  The pilot's noise is
    keyed by (``generator`` seed, pilot image id (``image_ids``, default 0..P−1), step), so every process that runs
    the same pilot images gets the same proposal.
    """
    if not 0 < mix <= 1:
        raise ValueError(f"mix must lie in (0, 1], got {mix!r}")
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ValueError(f"draws must be an int >= 1, got {draws!r}")
    spec = _resolve_spec(model, variance, decoder, levels)
    _validate_data(x0_pilot, spec.decoder, spec.levels)
    s = schedule.to(x0_pilot.device)
    seed = _seed(generator)
    steps = pilot_steps(s.T, grid)  # (G,)
    P, G = x0_pilot.shape[0], steps.shape[0]
    ids = _image_ids(image_ids, P)
    R = draws  # (image, step, draw) triples, image-major
    rows, k = torch.arange(P).repeat_interleave(G * R), steps.repeat_interleave(R).repeat(P)
    kw = dict(model=spec, form=form, model_dtype=model_dtype or x0_pilot.dtype)
    with torch.no_grad():
        values = _evaluate(
            eps_model,
            s,
            x0_pilot.to(torch.float64),
            rows,
            ids,
            k,
            torch.arange(R).repeat(P * G),
            seed,
            STREAM_PILOT,
            chunk_size,
            kw,
        ).reshape(P, G, R)
    rms = values.pow(2).mean((0, 2)).sqrt().cpu().numpy()  # (G,)
    log_rms = np.log(np.maximum(rms, 1e-300))  # geometric interpolation between grid steps
    rms = torch.from_numpy(np.exp(np.interp(np.arange(s.T), steps.numpy(), log_rms))).to(x0_pilot.device)  # (T,)
    q = rms / rms.sum() if float(rms.sum()) > 0 else torch.full_like(rms, 1.0 / s.T)
    return (1.0 - mix) * q + mix / s.T


def pilot_proposal(
    eps_model: Callable,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    *,
    pilot_images: int = 4,
    grid: int | None = 64,
    draws: int = 4,
    generator=None,
    image_ids=None,
    chunk_size: int = DEFAULT_CHUNK,
    **model_kw,
) -> tuple[torch.Tensor, int]:
    """(proposal, its cost in network evaluations): the pilot :func:`variational_bound` runs when it is given no
    proposal -- :func:`estimate_proposal` on the first ``pilot_images`` images of ``x0`` (ids from ``image_ids``,
    default 0..N−1), ``grid`` steps and ``draws`` ε draws each.  One place for it, so a sharded run
    (:func:`elbo_lab.distributed.sharded_bound`) pays and counts the same pilot as one process.  ``model_kw``: the
    model being bounded (``model`` or ``variance``/``decoder``/``levels``), ``form``, ``model_dtype``."""
    n_p = max(1, min(pilot_images, x0.shape[0]))
    ids = _image_ids(image_ids, x0.shape[0])[:n_p]
    p = estimate_proposal(
        eps_model,
        schedule,
        x0[:n_p],
        grid=grid,
        draws=draws,
        generator=generator,
        chunk_size=chunk_size,
        image_ids=ids,
        **model_kw,
    )
    return p, n_p * len(pilot_steps(schedule.T, grid)) * draws


@torch.no_grad()
def variational_bound(
    eps_model: Callable,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    *,
    model: ModelSpec | None = None,
    estimator: Estimator = "full",
    variance=None,
    decoder: str | None = None,
    levels: int | None = None,
    generator=None,
    num_samples: int | None = None,
    proposal=None,
    pilot_images: int = 4,
    pilot_grid: int | None = 64,
    pilot_draws: int = 4,
    chunk_size: int = DEFAULT_CHUNK,
    form: str = "kl",
    model_dtype=None,
    exact_decoder: bool = True,
    bits_per_dim: bool = False,
    image_ids=None,
    progress: bool = False,
    eps_draws: int = 2,
    decoder_draws: int = 4,
    stratified_importance: bool = False,
) -> BoundResult:
    """The variational bound (NLL bound, nats, ≥ −log p_θ(x_0)) of ``eps_model`` for each image of ``x0``.

    ``eps_model(x_t, k) -> output`` (or (output, v)) with x_t (B, *shape) in ``model_dtype`` (default: x0's
    dtype) and k (B,) long code index (k = 0..T−1 ↔ paper step t = k + 1); the output is ε̂, x̂_0 or v̂ as the
    spec's ``prediction`` says.  x0 (N, *shape) in [−1, 1] on K = ``levels`` levels for the discretized decoder;
    any finite values for ``decoder="gaussian"``.

    The model being bounded: ``model`` (a :class:`ModelSpec`), or -- for existing callers -- the keywords
    ``variance`` (default "posterior"), ``decoder`` (default "discretized") and ``levels``; not both.
    The estimator's knobs: ``estimator``: "full" | "uniform" | "stratified" | "importance" (see the module
    docstring); ``num_samples`` steps per image for the sampled ones (default 32; ≥ 2; even for stratified).
    ``exact_decoder`` (default): sampled estimators evaluate L_0 at every image (``decoder_draws`` ε draws, default
    4, each an evaluation) and sample only k ≥ 1; False: sample all k = 0..T−1.  ``stratified_importance``:
    importance with stratified inverse-CDF draws (even M; see the module docstring); default i.i.d. draws.
    ``proposal`` (T,) for "importance" (entries k < 1 ignored with ``exact_decoder``), else estimated from the
    first ``pilot_images`` images on ``pilot_grid`` steps with ``pilot_draws`` ε draws each
    (:func:`estimate_proposal`; counted in ``n_evals``).

    Randomness: ``generator`` is an int seed (None: 0; a torch.Generator: one seed drawn from it).  Every ε and
    every step choice is keyed by (seed, image id, step, draw) -- ``image_ids`` (N,) are the images' indices in
    the dataset (default 0..N−1) -- so an image's result does not depend on the chunk size, on the other images
    in ``x0`` or on which process evaluated it (shard a dataset by passing each shard its ids; pass the same
    ``proposal`` to every shard).  ``progress``: a tqdm bar with ETA on stderr when it is a terminal.
    Bookkeeping is float64.  Bad input raises ValueError naming the problem.  Test: tests/test_bound.py.
    """
    spec = _resolve_spec(model, variance, decoder, levels)
    _validate_data(x0, spec.decoder, spec.levels)
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    if form not in ("kl", "eps"):
        raise ValueError(f"form must be 'kl' or 'eps', got {form!r}")
    if form == "eps" and (callable(spec.variance) or spec.variance == "learned"):
        raise ValueError("form='eps' needs a fixed variance ('posterior', 'beta' or 'fixed_large')")
    schedule = schedule.to(x0.device)
    seed = _seed(generator)
    N, T, dim = x0.shape[0], schedule.T, x0[0].numel()
    ids = _image_ids(image_ids, N)
    model_dtype = model_dtype or x0.dtype
    x64 = x0.to(torch.float64)
    kw = dict(model=spec, form=form, model_dtype=model_dtype)
    prior = prior_term(schedule, x64)
    common = dict(model=spec, seed=seed)

    if not isinstance(stratified_importance, bool):
        raise ValueError(f"stratified_importance must be True or False, got {stratified_importance!r}")
    if stratified_importance and estimator != "importance":
        raise ValueError(f"stratified_importance needs estimator='importance', got {estimator!r}")
    if estimator == "full":
        R = eps_draws
        if isinstance(R, bool) or not isinstance(R, int) or R < 1:
            raise ValueError(f"eps_draws must be an int >= 1, got {R!r}")
        # image-major (image, step, draw) triples
        rows = torch.arange(N).repeat_interleave(T * R)
        ks, draws = torch.arange(T).repeat_interleave(R).repeat(N), torch.arange(R).repeat(N * T)
        bar = _Progress(progress, N * T * R, "bound (full)")
        try:
            values = _evaluate(
                eps_model, schedule, x64, rows, ids, ks, draws, seed, STREAM_FULL, chunk_size, kw, bar
            ).reshape(N, T, R)
        finally:
            bar.close()
        terms = values.mean(2)
        total = prior + terms.sum(1)
        # ε-noise: Var(mean of R draws at step k) = var_k / R, steps independent; R = 1 leaves it unestimated
        if R >= 2:
            v = values.var(2, unbiased=True) / R  # (N, T), R − 1 degrees of freedom each
            stderr, dof = v.sum(1).sqrt(), satterthwaite_dof(v.sum(1), v.pow(2).sum(1) / (R - 1))
        else:
            stderr = dof = torch.full_like(total, float("nan"))
        result = BoundResult(
            total, prior, terms[:, 0].clone(), terms, stderr, N * T * R, dim, eps_draws=R, dof=dof, **common
        )
        return result.bits_per_dim() if bits_per_dim else result

    if estimator not in ("uniform", "stratified", "importance"):
        raise ValueError(f"estimator must be 'full', 'uniform', 'stratified' or 'importance', got {estimator!r}")
    M = DEFAULT_SAMPLES if num_samples is None else num_samples
    if isinstance(M, bool) or not isinstance(M, int) or M < 2:
        raise ValueError(f"num_samples must be an int >= 2 (a standard error needs two draws), got {M!r}")
    lo = 1 if exact_decoder else 0  # sampled steps: k = lo..T−1
    if T - lo < 1:
        raise ValueError("T = 1 with exact_decoder: there are no steps to sample; use estimator='full'")
    if isinstance(decoder_draws, bool) or not isinstance(decoder_draws, int) or decoder_draws < 2:
        raise ValueError(f"decoder_draws must be an int >= 2 (a variance needs two draws), got {decoder_draws!r}")
    if stratified_importance and M % 2:
        raise ValueError(f"stratified_importance needs estimator='importance' and an even num_samples, got {M}")
    strata = stratified_importance
    if estimator == "stratified" and (M % 2 or M // 2 > T - lo):
        raise ValueError(
            f"stratified needs an even num_samples <= {2 * (T - lo)} (two draws per stratum of the {T - lo} "
            f"sampled steps), got {M}"
        )
    n_pilot = 0
    if estimator == "importance":
        if proposal is None:
            proposal, n_pilot = pilot_proposal(
                eps_model,
                schedule,
                x0,
                pilot_images=pilot_images,
                grid=pilot_grid,
                draws=pilot_draws,
                generator=seed,
                image_ids=ids,
                chunk_size=chunk_size,
                **kw,
            )
        given = _check_proposal(proposal, T, lo).to(x0.device)  # what the result reports (reusable as proposal=)
        proposal, take_all = _take_all_steps(given)
    else:
        take_all = []

    # the take-all steps, each at every image with R ε draws: L_0 (exact_decoder; R = decoder_draws) and any step the
    # proposal gives p_k >= 1/2 (R = max(decoder_draws, ⌈M p_k⌉): the draws it would have had, as a fixed number)
    certain = ([(0, decoder_draws)] if exact_decoder else []) + [
        (k, max(decoder_draws, math.ceil(M * pk))) for k, pk in take_all
    ]
    take_all = [k for k, _ in take_all]
    n_dec = N * sum(R for _, R in certain)
    bar = _Progress(progress, N * M + n_dec, f"bound ({estimator}, M = {M})")
    try:
        k, weights = _sample_steps(estimator, lo, T, ids, M, proposal, seed, strata)  # (N, M) each, CPU
        rows, draws = torch.arange(N).repeat_interleave(M), torch.arange(M).repeat(N)
        values = _evaluate(
            eps_model, schedule, x64, rows, ids, k.flatten(), draws, seed, STREAM_SAMPLED, chunk_size, kw, bar
        ).reshape(N, M)
        # a stratum of size 1 per take-all step, R ε draws each (R >= 2: an unbiased variance), (N, R) per step
        dec = [
            _evaluate(
                eps_model,
                schedule,
                x64,
                torch.arange(N).repeat_interleave(R),
                ids,
                torch.full((N * R,), kc, dtype=torch.long),
                torch.arange(R).repeat(N),
                seed,
                STREAM_DECODER,
                chunk_size,
                kw,
                bar,
            ).reshape(N, R)
            for kc, R in certain
        ]
    finally:
        bar.close()
    k, weights = k.to(x0.device), weights.to(x0.device)
    estimate, var, var_sq = _combine(estimator, values, weights, strata)
    sums = torch.zeros(N, T, dtype=torch.float64, device=x0.device).scatter_add_(1, k, values)
    counts = torch.zeros(N, T, dtype=torch.float64, device=x0.device).scatter_add_(1, k, torch.ones_like(values))
    terms = torch.where(counts > 0, sums / counts.clamp(min=1), torch.full_like(sums, float("nan")))
    n_evals = N * M + n_pilot + n_dec
    for (kc, R), d in zip(certain, dec):
        terms[:, kc] = d.mean(1)
        estimate = estimate + d.mean(1)
        v_dec = d.var(1) / R  # Var of the mean of R draws, R − 1 degrees of freedom
        var, var_sq = var + v_dec, var_sq + v_dec.pow(2) / (R - 1)
    result = BoundResult(
        prior + estimate,
        prior,
        terms[:, 0].clone(),
        terms,
        var.sqrt(),
        n_evals,
        dim,
        estimator=estimator,
        num_samples=M,
        n_pilot_evals=n_pilot,
        proposal=given if estimator == "importance" else None,
        dof=satterthwaite_dof(var, var_sq),
        decoder_draws=decoder_draws if exact_decoder else None,
        stratified_importance=strata,
        take_all=take_all,
        **common,
    )
    return result.bits_per_dim() if bits_per_dim else result


def l_simple(
    eps_model: Callable, schedule: NoiseSchedule, x0: torch.Tensor, generator=None, model_dtype=None
) -> torch.Tensor:
    """L_simple per image: mean over dimensions of (ε − ε_θ(x_t, t))² at k ~ U{0..T−1}, fresh ε, (B,)
    (differentiable; float64).  ‖·‖²/D, improved-diffusion's ``mean_flat``; the weights w_t of E9 dropped.

    Derivation: E10 ``simple_loss``.  Test: tests/test_bound.py.
    """
    gen = _generator(generator, x0.device)
    k = torch.randint(0, schedule.T, (x0.shape[0],), generator=gen, device=gen.device).to(x0.device)
    noise = torch.randn(x0.shape, generator=gen, dtype=torch.float64, device=gen.device).to(x0.device)
    xt = D.q_sample(schedule.to(x0.device), x0.to(torch.float64), k, noise)
    eps_hat, _ = _call_model(eps_model, xt, k, model_dtype or x0.dtype)
    return simple_term(noise, eps_hat)


def simple_term(noise: torch.Tensor, eps_hat: torch.Tensor) -> torch.Tensor:
    """‖ε − ε̂‖²/D per example, (B,): the summand of L_simple at given ε and ε̂ = ε_θ(x_t, t) (differentiable;
    the dtype of the inputs).  Used by :func:`l_simple` and by training loops that draw k themselves.

    Derivation: E10 ``simple_loss``.  Test: tests/test_bound.py (via :func:`l_simple`), tests/test_ddpm.py.
    """
    if noise.shape != eps_hat.shape:
        raise ValueError(f"shape mismatch: noise {tuple(noise.shape)} and eps_hat {tuple(eps_hat.shape)}")
    return (noise - eps_hat).pow(2).flatten(1).mean(1)


@torch.no_grad()
def trajectory_bound(
    eps_model: Callable,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    *,
    model: ModelSpec | None = None,
    variance=None,
    decoder: str | None = None,
    levels: int | None = None,
    generator=None,
    model_dtype=None,
) -> torch.Tensor:
    """Route (3) to the bound: log q(x_{1:T}|x_0) − log p_θ(x_{0:T}) on one whole sampled trajectory per row of
    ``x0``, (N,) float64 nats.  Its expectation is the bound of :func:`variational_bound` (E7 is an identity of
    exactly these log-density ratios); its spread is much larger, so average many rows (repeat an image) and
    compare within standard errors.

    The trajectory is drawn in the factorisation of E7: x_T ~ q(x_T|x_0), then x_{t−1} ~ q(x_{t−1}|x_t, x_0)
    for t = T..2; p_θ uses the same reverse variance and decoder as the other routes.  T network evaluations
    per row.  Test: tests/test_bound.py, tests/test_ddpm.py (within 4 standard errors of the full estimator).
    """
    spec = _resolve_spec(model, variance, decoder, levels)
    variance, decoder, levels = spec.variance, spec.decoder, spec.levels
    _validate_data(x0, decoder, levels)
    s = schedule.to(x0.device)
    gen = _generator(generator, x0.device)
    x0 = x0.to(torch.float64)
    model_dtype = model_dtype or x0.dtype
    N = x0.shape[0]

    def draw(mean, var):
        return mean + var.sqrt() * torch.randn(x0.shape, generator=gen, dtype=torch.float64, device=gen.device).to(
            x0.device
        )

    mean, var = D.q_marginal(s, x0, s.T - 1)
    x = draw(mean, var)  # x_T
    log_q = normal_log_prob(x, mean, var).flatten(1).sum(1)
    log_p = normal_log_prob(x, torch.zeros_like(x), torch.ones_like(x)).flatten(1).sum(1)
    for k in range(s.T - 1, -1, -1):
        kk = torch.full((N,), k, dtype=torch.long, device=x0.device)
        out_hat, v = _call_model(eps_model, x, kk, model_dtype)
        mu = D.reverse_mean(s, x, kk, _to_eps(s, x, kk, out_hat, spec.prediction, spec.clip_denoised))
        sigma2 = _reverse_variance(s, kk, variance, v, x)
        if k == 0:
            return log_q - (log_p - _decoder_nll(x0, mu, sigma2, decoder, levels))
        m_q, v_q = D.q_posterior(s, x0, x, kk)
        x_prev = draw(m_q, v_q)
        log_q += normal_log_prob(x_prev, m_q, v_q).flatten(1).sum(1)
        log_p += normal_log_prob(x_prev, mu, sigma2).flatten(1).sum(1)
        x = x_prev
    raise AssertionError("unreachable: the loop returns at k = 0")

"""Score a diffusers ``UNet2DModel`` + ``DDPMScheduler`` saved with ``save_pretrained`` in a local directory.

``load_diffusers(DIR)`` reads the U-Net and the scheduler from disk only (``HF_HUB_OFFLINE=1``,
``local_files_only=True``: never the hub) and returns a :class:`DiffusersModel`: an ε-model callable for the
engine (:func:`elbo_lab.bound.variational_bound`), the scheduler's β_t in float64, and the engine's variance
convention.  Two layouts are read: a pipeline directory (``DIR/unet`` + ``DIR/scheduler``, what
``DDPMPipeline.save_pretrained`` writes) or one directory holding both ``config.json`` (the U-Net) and
``scheduler_config.json``.

How each scheduler setting maps onto the engine (from ``diffusers/schedulers/scheduling_ddpm.py``, 0.42.1;
diffusers' ``timestep`` is the engine's code index k = t − 1):

- **betas**: recomputed in float64 from the config (diffusers itself keeps float32): ``linear``
  linspace(β_start, β_end, T); ``scaled_linear`` linspace(√β_start, √β_end, T)²; ``squaredcos_cap_v2`` the
  improved-DDPM cosine schedule with s = 0.008, max β = 0.999 (:meth:`NoiseSchedule.cosine`, the same
  expression as diffusers' ``betas_for_alpha_bar``); ``sigmoid`` sigmoid(linspace(−6, 6, T))·(β_end − β_start)
  + β_start; ``trained_betas`` as given.  Others (``laplace``, ``rescale_betas_zero_snr``) raise.
- **prediction_type** → ε̂ (exact identities of x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε):
  ``epsilon``: the output is ε̂;  ``sample``: the output is x̂_0 and ε̂ = (x_t − √ᾱ_t x̂_0)/√(1−ᾱ_t)
  (:func:`elbo_lab.diffusion.predict_eps`, E5 ``eps_from_xt``);  ``v_prediction``: with diffusers'
  v = √ᾱ_t ε − √(1−ᾱ_t) x_0 (``get_velocity``), x̂_0 = √ᾱ_t x_t − √(1−ᾱ_t) v̂ and ε̂ = √ᾱ_t v̂ + √(1−ᾱ_t) x_t
  (substitute x_t: ᾱ_t ε + (1 − ᾱ_t) ε = ε; :func:`eps_from_v`).
- **variance_type** → σ_t² of p_θ(x_{t−1}|x_t) for t ≥ 2 (identical to diffusers' ``_get_variance``):
  ``fixed_small``/``fixed_small_log`` σ_t² = β̃_t (engine ``"posterior"``); ``fixed_large`` σ_t² = β_t, β_1
  at t = 1 (engine ``"beta"``; this is diffusers' definition, not the reference's FIXED_LARGE, which uses β̃_2 at
  t = 1); ``learned_range``: the U-Net has 2C output channels, the last C are v_d ∈ [−1, 1] and
  log σ_t² = f log β_t + (1 − f) log β̃_t with f = (v_d + 1)/2 (engine ``"learned"`` with v = f).
  ``learned`` (raw variance) and ``fixed_large_log`` raise.  At t = 1 diffusers never draws noise, so its σ_1²
  is unused by its sampler; the bound needs a decoder variance there and takes the engine's (the reference's):
  clipped β̃_2 for ``fixed_small`` and ``learned_range``, β_1 for ``fixed_large``.
- **clip_sample** (diffusers' default True) / ``clip_sample_range``: the sampler clips x̂_0 to [−r, r] before
  forming the posterior mean.  The bound then is that of the clipped model.  With r = 1 this is the engine's
  ``ModelSpec.clip_denoised``; with another r the wrapper hands the engine the ε̂ implied by the clipped x̂_0
  (ε̂ = (x_t − √ᾱ_t clip(x̂_0))/√(1−ᾱ_t)), which makes the engine's mean μ_θ(x_t, ε̂) exactly the clipped
  posterior mean (rows where nothing is clipped keep their ε̂ bit for bit).  ``thresholding`` raises.

The model being bounded is :meth:`DiffusersModel.spec` (a :class:`elbo_lab.bound.ModelSpec`): variance
convention, discretized decoder on the data's levels, prediction type (the engine converts x̂_0 / v̂ to ε̂) and
x̂_0 clipping -- so the number and the model it bounds travel together.

The U-Net runs in its parameter dtype (float32 as saved); ε̂ is formed in the dtype of x_t (float64 from the
engine).  Tests: ``tests/test_diffusers_io.py`` (conversions against diffusers' own ``add_noise`` /
``get_velocity`` / ``step``; CLI vs a direct :func:`variational_bound` call on a saved random-init U-Net).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import diffusion as D
from .errors import CheckpointError, ElboLabError
from .schedule import NoiseSchedule

__all__ = ["DiffusersEps", "DiffusersModel", "eps_from_v", "load_diffusers", "schedule_from_config"]

PREDICTIONS = ("epsilon", "sample", "v_prediction")
ENGINE_PREDICTION = {"epsilon": "epsilon", "sample": "sample", "v_prediction": "v"}  # ModelSpec.prediction
# diffusers variance_type -> the engine's variance convention
VARIANCES = {
    "fixed_small": "posterior",
    "fixed_small_log": "posterior",
    "fixed_large": "beta",
    "learned_range": "learned",
}


def eps_from_v(schedule: NoiseSchedule, xt: torch.Tensor, k, v: torch.Tensor) -> torch.Tensor:
    """ε = √ᾱ_t v + √(1 − ᾱ_t) x_t for diffusers' velocity v = √ᾱ_t ε − √(1 − ᾱ_t) x_0 (k = t − 1).

    Derivation: substitute x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε (E5): √ᾱ_t v + √(1−ᾱ_t) x_t = (ᾱ_t + 1 − ᾱ_t) ε.
    Test: tests/test_diffusers_io.py (SymPy identity; against diffusers' ``get_velocity``).
    """
    if xt.shape != v.shape:
        raise ValueError(f"shape mismatch: xt {tuple(xt.shape)} and v {tuple(v.shape)}")
    k = D.timesteps(schedule, k, xt.shape[0])
    shape = (-1,) + (1,) * (xt.ndim - 1)
    a = schedule.alpha_bars[k].reshape(shape).to(xt.dtype)
    s = schedule.one_minus_alpha_bars[k].reshape(shape).to(xt.dtype)
    return a.sqrt() * v + s.sqrt() * xt


def schedule_from_config(config: dict) -> NoiseSchedule:
    """The scheduler's β_1..β_T in float64 from its config (see the module docstring); ElboLabError otherwise."""
    T = int(config.get("num_train_timesteps", 1000))
    if config.get("rescale_betas_zero_snr"):
        raise ElboLabError("diffusers scheduler: rescale_betas_zero_snr gives ᾱ_T = 0 (β_T = 1): no finite bound")
    trained = config.get("trained_betas")
    b0, b1 = float(config.get("beta_start", 1e-4)), float(config.get("beta_end", 0.02))
    kind = config.get("beta_schedule", "linear")
    if trained is not None:
        betas, name = np.asarray(trained, dtype=np.float64), f"diffusers trained_betas(T={len(trained)})"
    elif kind == "linear":
        betas, name = np.linspace(b0, b1, T, dtype=np.float64), f"linear(T={T}, {b0:g}..{b1:g})"
    elif kind == "scaled_linear":
        betas = np.linspace(math.sqrt(b0), math.sqrt(b1), T, dtype=np.float64) ** 2
        name = f"scaled_linear(T={T}, {b0:g}..{b1:g})"
    elif kind == "squaredcos_cap_v2":
        return NoiseSchedule.cosine(T, s=0.008, max_beta=0.999)
    elif kind == "sigmoid":
        betas = 1.0 / (1.0 + np.exp(-np.linspace(-6.0, 6.0, T, dtype=np.float64))) * (b1 - b0) + b0
        name = f"sigmoid(T={T}, {b0:g}..{b1:g})"
    else:
        raise ElboLabError(f"diffusers scheduler: beta_schedule {kind!r} is not supported")
    try:
        return NoiseSchedule.from_betas(torch.from_numpy(betas), name=name)
    except ValueError as exc:
        raise ElboLabError(f"diffusers scheduler: {exc}") from None


class DiffusersEps(nn.Module):
    """ε-model for the engine from a diffusers ``UNet2DModel``: ``(x_t, k) → ε̂`` or ``(ε̂, v)`` (learned_range).

    ``clip``: None, or r > 0 to clip x̂_0 to [−r, r] (diffusers' ``clip_sample``), see the module docstring.
    ``convert=False``: return the U-Net's output as it is (ε̂, x̂_0 or v̂; the engine converts it, as the
    :class:`~elbo_lab.bound.ModelSpec` says) and ignore ``clip``.
    """

    def __init__(
        self, unet: nn.Module, schedule: NoiseSchedule, prediction_type: str, learned: bool, clip=None, convert=True
    ):
        super().__init__()
        if prediction_type not in PREDICTIONS:
            raise ElboLabError(f"diffusers prediction_type {prediction_type!r} is not one of {', '.join(PREDICTIONS)}")
        self.unet, self.schedule = unet, schedule
        self.prediction_type, self.learned, self.clip, self.convert = prediction_type, learned, clip, convert

    def forward(self, xt: torch.Tensor, k: torch.Tensor):
        dtype = next(self.unet.parameters()).dtype
        out = self.unet(xt.to(dtype), k, return_dict=False)[0].to(xt.dtype)
        C = xt.shape[1]
        if out.shape[1] != (2 * C if self.learned else C):
            raise ElboLabError(
                f"the U-Net returned {out.shape[1]} channels for {C}-channel input; variance_type "
                f"{'learned_range needs 2C' if self.learned else 'fixed_* needs C'}"
            )
        raw, v = (out[:, :C], (out[:, C:] + 1.0) / 2.0) if self.learned else (out, None)  # v: diffusers' frac
        s = self.schedule
        if not self.convert:
            return (raw, v) if self.learned else raw
        if self.prediction_type == "epsilon":
            eps = raw
        elif self.prediction_type == "sample":
            eps = D.predict_eps(s, xt, k, raw)
        else:
            eps = eps_from_v(s, xt, k, raw)
        if self.clip is not None:
            x0 = raw if self.prediction_type == "sample" else D.predict_x0(s, xt, k, eps)
            inside = (x0 >= -self.clip) & (x0 <= self.clip)
            eps = torch.where(inside, eps, D.predict_eps(s, xt, k, x0.clamp(-self.clip, self.clip)))
        return (eps, v) if self.learned else eps


@dataclass
class DiffusersModel:
    """What :func:`load_diffusers` returns: the engine's ε-model, schedule and variance for one directory."""

    path: Path
    eps_model: DiffusersEps
    schedule: NoiseSchedule
    variance: str  # the engine's convention: "posterior" | "beta" | "learned"
    prediction_type: str
    variance_type: str
    clip: float | None
    shape: tuple[int, int, int]  # (C, H, W) of one image
    unet_config: dict = field(repr=False, default_factory=dict)
    scheduler_config: dict = field(repr=False, default_factory=dict)

    def spec(self, levels: int):
        """The model being bounded, as the engine's :class:`~elbo_lab.bound.ModelSpec` (the one place that turns
        this model's conventions into the engine's): variance, discretized decoder on ``levels``, the prediction
        type and x̂_0 clipping -- done by the engine, or by the wrapper when the clip range is not 1."""
        from .bound import ModelSpec

        by_engine = not self.eps_model.convert
        return ModelSpec(
            variance=self.variance,
            decoder="discretized",
            levels=levels,
            prediction=ENGINE_PREDICTION[self.prediction_type] if by_engine else "epsilon",
            clip_denoised=self.clip is not None and by_engine,
            source=f"diffusers: {self.describe()}",
        )

    def describe(self) -> str:
        clip = f"x̂_0 clipped to [-{self.clip:g}, {self.clip:g}] (clip_sample)" if self.clip else "x̂_0 not clipped"
        return (
            f"diffusers UNet2DModel + DDPMScheduler in {self.path}: prediction_type={self.prediction_type}, "
            f"variance_type={self.variance_type} (engine variance '{self.variance}'), {clip}, {self.schedule.name}"
        )

    def describe_dict(self) -> dict:
        return {
            "path": str(self.path),
            "prediction_type": self.prediction_type,
            "variance_type": self.variance_type,
            "engine_variance": self.variance,
            "clip_sample_range": self.clip,
            "schedule": self.schedule.name,
            "T": self.schedule.T,
            "shape": list(self.shape),
        }


def _layout(path: Path) -> tuple[Path, Path]:
    """(U-Net directory, scheduler directory) of a saved pipeline or of one directory with both configs."""
    if not path.is_dir():
        raise CheckpointError(f"--diffusers {path}: not a directory")
    if (path / "unet" / "config.json").is_file() and (path / "scheduler" / "scheduler_config.json").is_file():
        return path / "unet", path / "scheduler"
    if (path / "config.json").is_file() and (path / "scheduler_config.json").is_file():
        return path, path
    raise CheckpointError(
        f"--diffusers {path}: expected unet/config.json + scheduler/scheduler_config.json (a saved pipeline) "
        "or config.json + scheduler_config.json in the directory"
    )


def _offline() -> None:
    """Never reach the hub: offline mode and no telemetry, unless the user set them already."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")


def load_diffusers(path: str | Path, device="cpu") -> DiffusersModel:
    """Load a local diffusers U-Net + DDPM scheduler (see the module docstring); :class:`ElboLabError` on bad input."""
    path = Path(path)
    unet_dir, sched_dir = _layout(path)
    _offline()
    try:
        from diffusers import DDPMScheduler, UNet2DModel
    except ImportError:
        raise ElboLabError(
            "--diffusers needs the optional diffusers package: pip install -c constraints.txt -e '.[diffusers]'"
        ) from None
    try:
        scheduler = DDPMScheduler.from_pretrained(sched_dir, local_files_only=True)
        unet = UNet2DModel.from_pretrained(unet_dir, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"--diffusers {path}: cannot load the U-Net or the scheduler ({first[:160]})") from None
    cfg = dict(scheduler.config)
    if cfg.get("thresholding"):
        raise ElboLabError("diffusers scheduler: thresholding=True (dynamic thresholding) is not supported")
    vtype, ptype = cfg.get("variance_type", "fixed_small"), cfg.get("prediction_type", "epsilon")
    if vtype not in VARIANCES:
        raise ElboLabError(f"diffusers variance_type {vtype!r} is not supported (use one of {', '.join(VARIANCES)})")
    schedule = schedule_from_config(cfg)
    ucfg = dict(unet.config)
    size = ucfg.get("sample_size")
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    shape = (int(ucfg["in_channels"]), int(h), int(w))
    learned = VARIANCES[vtype] == "learned"
    if int(ucfg["out_channels"]) != (2 * shape[0] if learned else shape[0]):
        raise CheckpointError(
            f"--diffusers {path}: the U-Net has {ucfg['out_channels']} output channels for {shape[0]} input channels, "
            f"but variance_type {vtype} needs {2 * shape[0] if learned else shape[0]}"
        )
    clip = float(cfg.get("clip_sample_range", 1.0)) if cfg.get("clip_sample", True) else None
    schedule = schedule.to(device)
    # the engine converts and clips (ModelSpec) unless the clip range is not 1, which only the wrapper can do
    convert = clip is not None and clip != 1.0
    model = DiffusersEps(unet.to(device).eval(), schedule, ptype, learned, clip, convert=convert)
    return DiffusersModel(path, model, schedule, VARIANCES[vtype], ptype, vtype, clip, shape, ucfg, cfg)

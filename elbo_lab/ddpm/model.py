"""The ε-model of a DDPM: a network (:mod:`elbo_lab.nets`) plus its output parameterization, device and precision.

``EpsModel(x_t, k) -> ε̂`` or ``(ε̂, v)`` (learned variance), the callable the engine expects
(:func:`elbo_lab.bound.variational_bound`, :func:`elbo_lab.bound.bound_term`); k is the (B,) code index
0..T−1 (paper step t = k + 1).  Two output parameterizations:

- ``"eps"``: the network's output is ε̂ (Ho et al. 2020).
- ``"categorical"``: for data on K levels, the network outputs K logits f_θ(x_t, t)_l per value, and ε̂ is the
  noise implied by the posterior-mean estimate of x_0 under a categorical posterior over the levels,

      p_θ(x_0 = l | x_t) ∝ exp(f_θ(x_t, t)_l) · q(x_t | x_0 = l)    (per value, q from E5),
      x̂_0 = Σ_l p_θ(x_0 = l | x_t) · l,     ε̂ = (x_t − √ᾱ_t x̂_0)/√(1 − ᾱ_t)   (E5 ``eps_from_xt``).

  With f_θ ≡ 0 this is the exact Bayes denoiser of i.i.d. uniform pixels; with f_θ = the per-pixel log
  marginals it is the exact denoiser of the factorized categorical model (DESIGN.md, oracles).  The network
  learns only the context evidence; the likelihood term snaps x̂_0 onto the grid at low noise, where an
  ε-network must otherwise learn a sawtooth of amplitude ~h/σ_t (the 1.36 bits/dim of steps 2–10 in the
  issue).  The bound is computed exactly as for any ε-model: the engine sees ε̂.

The network runs in its parameter dtype (float32), under bf16 autocast on CUDA when ``amp`` is set; the
categorical head and the ε conversion run in the dtype of x_t (the engine passes float64 when evaluating the
bound).  No diffusion formula is written here: q(x_t|x_0) is :func:`elbo_lab.diffusion.q_marginal` with
:func:`elbo_lab.gaussian.normal_log_prob`, ε from x̂_0 is :func:`elbo_lab.diffusion.predict_eps`.
Test: ``tests/test_ddpm.py``.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .. import diffusion as D
from ..errors import ElboLabError
from ..gaussian import normal_log_prob
from ..nets import MLPConfig, UNetConfig, build_net, net_config_dict
from ..schedule import NoiseSchedule

__all__ = ["EMA", "EpsModel", "device_description", "make_net_config", "make_schedule", "resolve_device"]

PARAMS = ("eps", "categorical")
HEAD_VALUES = 2**25  # values per micro-batch of the output head when evaluating (see EpsModel.forward)


def resolve_device(spec: str) -> torch.device:
    """``auto`` → cuda if available else cpu; ``cuda`` without a GPU → :class:`ElboLabError` (one line, exit 2)."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ElboLabError(f"--device {spec}: CUDA is not available on this machine (use --device cpu or auto)")
        return torch.device(spec)
    raise ElboLabError(f"unknown device {spec!r} (expected auto, cpu or cuda)")


def device_description(device: torch.device) -> str:
    """A human-readable device name recorded in every output, e.g. ``cpu (2 threads)`` or ``cuda:0 (NVIDIA H100)``."""
    if device.type == "cuda":
        idx = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{idx} ({torch.cuda.get_device_name(idx)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def make_schedule(name: str, T: int, *, beta_start: float = 1e-4, beta_end: float = 0.02, s: float = 0.008):
    """The engine's schedule by name: ``linear`` (DDPM end points scaled by 1000/T, improved-diffusion's
    convention, so short schedules still reach ᾱ_T ≈ 0) or ``cosine`` (improved DDPM, offset ``s``)."""
    if name == "linear":
        return NoiseSchedule.linear(T, beta_start, beta_end, scale_to_1000=True)
    if name == "cosine":
        return NoiseSchedule.cosine(T, s=s)
    raise ValueError(f"unknown schedule {name!r} (expected linear or cosine)")


def _unet_levels(side: int) -> tuple[int, ...]:
    """Channel multipliers for a U-Net on side×side images: halve while the side stays ≥ 4 and even (≤ 4 levels)."""
    mults = [1]
    while len(mults) < 4 and side % 2 == 0 and side // 2 >= 4:
        side //= 2
        mults.append(2)
    return tuple(mults)


def make_net_config(
    shape: tuple[int, ...],
    *,
    T: int,
    learned_variance: bool,
    out_per_channel: int,
    base_channels: int = 32,
    num_res_blocks: int = 1,
    dropout: float = 0.1,
    attention: bool = True,
    hidden: int = 256,
    depth: int = 3,
) -> dict:
    """Network config (plain python types) for one example's ``shape``: (C, H, W) → U-Net, (D,) → MLP."""
    if len(shape) == 3:
        c, h, w = shape
        if h != w:
            raise ElboLabError(f"the U-Net needs square images, got {h}×{w}")
        mults = _unet_levels(h)
        lowest = h // 2 ** (len(mults) - 1)
        cfg = UNetConfig(
            in_channels=c,
            image_size=h,
            base_channels=base_channels,
            channel_mults=mults,
            num_res_blocks=num_res_blocks,
            attention_res=(lowest,) if attention and len(mults) > 1 else (),
            dropout=dropout,
            learned_variance=learned_variance,
            out_per_channel=out_per_channel,
            T=T,
        )
    elif len(shape) == 1:
        cfg = MLPConfig(
            dim=shape[0],
            hidden=hidden,
            depth=depth,
            dropout=dropout,
            learned_variance=learned_variance,
            out_per_channel=out_per_channel,
            T=T,
        )
    else:
        raise ElboLabError(f"unsupported example shape {shape}: expected (C, H, W) images or (D,) vectors")
    return net_config_dict(cfg)


class EpsModel(nn.Module):
    """ε-model callable for the engine: ``(x_t (B, *shape), k (B,)) → ε̂ (B, *shape)`` or ``(ε̂, v)``.

    ``net``: an :mod:`elbo_lab.nets` network whose output has ``out_per_channel`` = 1 (``param="eps"``) or
    K (``param="categorical"``) channels per data channel [+ 1 for v].  ``schedule`` is needed for the
    categorical head only.  ``amp``: run the network under bf16 autocast (CUDA only).
    """

    def __init__(
        self,
        net: nn.Module,
        schedule: NoiseSchedule,
        *,
        param: str = "eps",
        levels: int | None = None,
        amp: bool = False,
    ):
        super().__init__()
        if param not in PARAMS:
            raise ValueError(f"unknown output parameterization {param!r} (expected one of {PARAMS})")
        if param == "categorical" and (levels is None or levels < 2):
            raise ValueError("param='categorical' needs the number of data levels K >= 2")
        self.net = net
        self.schedule = schedule
        self.param = param
        self.levels = levels
        self.amp = amp
        self.learned_variance = bool(getattr(net, "module", net).cfg.learned_variance)  # net may be DDP-wrapped

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def forward(self, xt: torch.Tensor, k: torch.Tensor):
        # Evaluation (no autograd) in micro-batches whose K-logit tensors stay ~2^25 values (256 MiB in float64):
        # at CIFAR's shape with 256 levels one image's logits are 3·256·32·32 ≈ 786k values, so an engine chunk of
        # 1024 pairs would need ~6 GiB per tensor.  Every row is computed alone, so splitting changes no value.
        per_row = xt[0].numel() * (self.levels if self.param == "categorical" else 1)
        rows = max(1, HEAD_VALUES // per_row)
        if not torch.is_grad_enabled() and xt.shape[0] > rows:
            outs = [self._forward(xt[i : i + rows], k[i : i + rows]) for i in range(0, xt.shape[0], rows)]
            if self.learned_variance:
                return torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])
            return torch.cat(outs)
        return self._forward(xt, k)

    def _forward(self, xt: torch.Tensor, k: torch.Tensor):
        net_dtype = next(self.net.parameters()).dtype
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=self.amp and xt.is_cuda):
            out = self.net(xt.to(net_dtype), k)
        raw, v = out if self.learned_variance else (out, None)
        raw = raw.to(xt.dtype)
        v = v.to(xt.dtype) if v is not None else None
        eps = raw if self.param == "eps" else self._categorical_eps(raw, xt, k)
        return (eps, v) if self.learned_variance else eps

    def _categorical_eps(self, logits: torch.Tensor, xt: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """ε̂ from the categorical posterior over the K levels (see the module docstring)."""
        K = self.levels
        B, C = xt.shape[0], xt.shape[1]
        rest = xt.shape[2:]
        logits = logits.reshape(B, C, K, *rest)  # (B, C, K, *rest): channel index c·K + l
        grid = torch.linspace(-1.0, 1.0, K, dtype=xt.dtype, device=xt.device)  # the K levels in [−1, 1]
        grid = grid.reshape(1, 1, K, *([1] * len(rest))).expand(B, 1, K, *([1] * len(rest)))  # (B, 1, K, 1…)
        mean, var = D.q_marginal(self.schedule, grid, k)  # (B, 1, K, 1…), (B, 1, 1, 1…)  E5
        log_lik = normal_log_prob(xt.unsqueeze(2), mean, var)  # (B, C, K, *rest) log q(x_t | x_0 = l)
        post = torch.softmax(logits + log_lik, dim=2)  # (B, C, K, *rest) p_θ(x_0 = l | x_t)
        x0_hat = (post * grid).sum(2)  # (B, C, *rest)
        return D.predict_eps(self.schedule, xt, k, x0_hat)  # E5 eps_from_xt


class EMA:
    """Exponential moving average of a network's parameters (buffers copied), decay ramped as
    min(decay, (1 + n)/(10 + n)) over the first updates (so early averages are not stuck at the initialisation)."""

    def __init__(self, net: nn.Module, decay: float):
        if not 0 <= decay < 1:
            raise ValueError(f"EMA decay must lie in [0, 1), got {decay}")
        self.decay = decay
        self.net = copy.deepcopy(net).eval()
        for p in self.net.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, net: nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for pe, p in zip(self.net.parameters(), net.parameters()):
            pe.lerp_(p.detach(), 1.0 - d)
        for be, b in zip(self.net.buffers(), net.buffers()):
            be.copy_(b)


def build_eps_model(
    net_cfg: dict,
    schedule: NoiseSchedule,
    *,
    param: str,
    levels: int | None,
    device,
    amp: bool = False,
    seed: int | None = None,
) -> EpsModel:
    """An :class:`EpsModel` with a fresh network from its config dict, on ``device``.  With ``seed`` the
    initialisation is reproducible (drawn from a forked global RNG; the caller's RNG state is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        net = build_net(net_cfg)
    return EpsModel(net.to(device), schedule.to(device), param=param, levels=levels, amp=amp)

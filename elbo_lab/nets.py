"""ε-networks: a small U-Net for images (8×8 up to 32×32, C channels) and an MLP for vectors.

Both are called as ``net(x_t, k)`` with ``x_t`` a batch of noisy data and ``k`` the (B,) long **code index**
0..T−1 of the timestep (the paper's step t = k + 1, improved-diffusion / diffusers convention), and return
ε̂ with the shape of ``x_t`` -- or ``(ε̂, v)`` when built with ``learned_variance=True``: then the output
channels double and the second half is the improved-DDPM interpolation fraction v (Nichol & Dhariwal 2021,
eq. 15), σ_t² = exp(v log β_t + (1 − v) log β̃_t), mapped as v = (raw + 1)/2 like improved-diffusion's
``LEARNED_RANGE`` (v is not clamped: values slightly outside [0, 1] extrapolate in log space and still give a
positive variance).  The variance itself is computed by the engine (``diffusion.reverse_variance_from_v``),
never here.

Guide section: "simplified objective" (the ε-parameterization, E9/E10) and "sampling" (E11).
No diffusion formula lives in this file: the networks are function approximators only.  The network runs in
the dtype of its parameters (float32); callers cast x_t to it (``EpsModel`` in ``train_ddpm`` does, and runs
the net under bf16 autocast on CUDA).  Tests: ``tests/test_ddpm.py``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MLPConfig", "MLPEps", "UNetConfig", "UNetEps", "build_net", "timestep_embedding"]


def timestep_embedding(k: torch.Tensor, dim: int, T: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of the code index k ∈ {0..T−1} (Transformer / DDPM style), (B,) → (B, dim).

    k is rescaled to s = 1000·k/T so that the frequencies cover the same range for any T.
    """
    half = dim // 2
    s = k.to(torch.float32) * (1000.0 / T)  # (B,)
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=k.device) / half)
    args = s[:, None] * freqs[None, :]  # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)  # (B, 2·half)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def _groups(channels: int) -> int:
    """The largest group count ≤ 32 that divides ``channels`` (GroupNorm needs a divisor)."""
    for g in (32, 16, 8, 4, 2, 1):
        if channels % g == 0 and channels // g >= 2 or g == 1:
            return g
    return 1


def _zero(module: nn.Module) -> nn.Module:
    """Zero-initialise a layer's parameters (output layers of residual branches, as in improved-diffusion)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """GroupNorm → SiLU → conv → (scale, shift from the time embedding) → GroupNorm·(1+s)+b → SiLU → dropout → conv,
    plus a (1×1 conv) skip connection.  (B, c_in, H, W) → (B, c_out, H, W)."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * c_out)
        self.norm2 = nn.GroupNorm(_groups(c_out), c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(c_out, c_out, 3, padding=1))
        self.skip = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, c_out, H, W)
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)  # (B, c_out, 1, 1) each
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Single-head self-attention over the H·W positions, residual.  (B, c, H, W) → (B, c, H, W)."""

    def __init__(self, c: int):
        super().__init__()
        self.norm = nn.GroupNorm(_groups(c), c)
        self.qkv = nn.Conv2d(c, 3 * c, 1)
        self.out = _zero(nn.Conv2d(c, c, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).unbind(1)  # (B, c, HW) each
        a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))  # (B, HW, c)
        return x + self.out(a.transpose(1, 2).reshape(b, c, h, w))


@dataclass
class UNetConfig:
    """A small U-Net.  ``channel_mults`` sets one resolution level each (the image side halves between levels,
    so H and W must be divisible by 2^(levels−1)); ``attention_res`` lists the sides (e.g. 4) that get a
    self-attention layer."""

    in_channels: int = 1
    image_size: int = 8
    base_channels: int = 64
    channel_mults: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 2
    attention_res: tuple[int, ...] = (4,)
    dropout: float = 0.1
    learned_variance: bool = False
    out_per_channel: int = 1  # ε̂ channels per data channel (a wrapper may ask for more, e.g. one logit per level)
    T: int = 1000
    kind: str = field(default="unet", init=False)


class UNetEps(nn.Module):
    """ε-network for images: (x_t (B, C, H, W), k (B,)) → ε̂ (B, C·out_per_channel, H, W) [, v (B, C, H, W)]."""

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        n_levels = len(cfg.channel_mults)
        if cfg.image_size % (2 ** (n_levels - 1)):
            raise ValueError(
                f"image size {cfg.image_size} is not divisible by 2^{n_levels - 1} (channel_mults={cfg.channel_mults})"
            )
        self.cfg = cfg
        ch = cfg.base_channels
        emb_dim = 4 * ch
        self.time_mlp = nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.inp = nn.Conv2d(cfg.in_channels, ch, 3, padding=1)

        self.down = nn.ModuleList()
        skips = [ch]
        c, side = ch, cfg.image_size
        for i, mult in enumerate(cfg.channel_mults):
            for _ in range(cfg.num_res_blocks):
                blocks = [ResBlock(c, ch * mult, emb_dim, cfg.dropout)]
                c = ch * mult
                if side in cfg.attention_res:
                    blocks.append(SelfAttention(c))
                self.down.append(nn.ModuleList(blocks))
                skips.append(c)
            if i < n_levels - 1:
                self.down.append(nn.ModuleList([nn.Conv2d(c, c, 3, stride=2, padding=1)]))  # downsample ×½
                skips.append(c)
                side //= 2
        self.mid = nn.ModuleList([ResBlock(c, c, emb_dim, cfg.dropout), SelfAttention(c), ResBlock(c, c, emb_dim, 0.0)])

        self.up = nn.ModuleList()
        for i, mult in reversed(list(enumerate(cfg.channel_mults))):
            for j in range(cfg.num_res_blocks + 1):
                blocks = [ResBlock(c + skips.pop(), ch * mult, emb_dim, cfg.dropout)]
                c = ch * mult
                if side in cfg.attention_res:
                    blocks.append(SelfAttention(c))
                if i > 0 and j == cfg.num_res_blocks:
                    blocks.append(nn.Upsample(scale_factor=2, mode="nearest"))
                    blocks.append(nn.Conv2d(c, c, 3, padding=1))
                    side *= 2
                self.up.append(nn.ModuleList(blocks))
        n_out = cfg.in_channels * (cfg.out_per_channel + (1 if cfg.learned_variance else 0))
        self.out = nn.Sequential(nn.GroupNorm(_groups(c), c), nn.SiLU(), _zero(nn.Conv2d(c, n_out, 3, padding=1)))

    @staticmethod
    def _run(blocks: nn.ModuleList, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for b in blocks:
            h = b(h, emb) if isinstance(b, ResBlock) else b(h)
        return h

    def forward(self, x: torch.Tensor, k: torch.Tensor):
        if x.ndim != 4 or x.shape[1] != self.cfg.in_channels:
            raise ValueError(f"expected x_t of shape (B, {self.cfg.in_channels}, H, W), got {tuple(x.shape)}")
        emb = self.time_mlp(timestep_embedding(k, self.cfg.base_channels, self.cfg.T).to(x.dtype))  # (B, 4ch)
        h = self.inp(x)  # (B, ch, H, W)
        hs = [h]
        for blocks in self.down:
            h = self._run(blocks, h, emb)
            hs.append(h)
        h = self._run(self.mid, h, emb)  # (B, c, H/2^L, W/2^L)
        for blocks in self.up:
            h = self._run(blocks, torch.cat([h, hs.pop()], dim=1), emb)
        out = self.out(h)  # (B, C·(out_per_channel [+1]), H, W)
        return _split_variance(out, self.cfg.in_channels * self.cfg.out_per_channel, self.cfg.learned_variance)


def _split_variance(out: torch.Tensor, n_eps: int, learned: bool):
    """Split the raw output into ε̂ and v = (raw + 1)/2 (improved-diffusion's LEARNED_RANGE) along dim 1."""
    if not learned:
        return out
    eps, raw = out[:, :n_eps], out[:, n_eps:]
    return eps, (raw + 1.0) / 2.0


@dataclass
class MLPConfig:
    """An MLP ε-network for vectors (B, D): [x_t, emb(k)] → hidden layers (SiLU, LayerNorm residual) → D [+ D]."""

    dim: int = 2
    hidden: int = 256
    depth: int = 3
    dropout: float = 0.0
    learned_variance: bool = False
    out_per_channel: int = 1
    T: int = 1000
    kind: str = field(default="mlp", init=False)


class MLPEps(nn.Module):
    """ε-network for vectors: (x_t (B, D), k (B,)) → ε̂ (B, D·out_per_channel) [, v (B, D)]."""

    def __init__(self, cfg: MLPConfig):
        super().__init__()
        self.cfg = cfg
        h = cfg.hidden
        self.time_mlp = nn.Sequential(nn.Linear(h, h), nn.SiLU(), nn.Linear(h, h))
        self.inp = nn.Linear(cfg.dim, h)
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.LayerNorm(h), nn.SiLU(), nn.Linear(h, h), nn.SiLU(), nn.Dropout(cfg.dropout), nn.Linear(h, h)
            )
            for _ in range(cfg.depth)
        )
        n_out = cfg.dim * (cfg.out_per_channel + (1 if cfg.learned_variance else 0))
        self.out = nn.Sequential(nn.LayerNorm(h), nn.SiLU(), _zero(nn.Linear(h, n_out)))

    def forward(self, x: torch.Tensor, k: torch.Tensor):
        if x.ndim != 2 or x.shape[1] != self.cfg.dim:
            raise ValueError(f"expected x_t of shape (B, {self.cfg.dim}), got {tuple(x.shape)}")
        emb = self.time_mlp(timestep_embedding(k, self.cfg.hidden, self.cfg.T).to(x.dtype))  # (B, h)
        h = self.inp(x) + emb  # (B, h)
        for block in self.blocks:
            h = h + block(h + emb)
        out = self.out(h)  # (B, D·(out_per_channel [+1]))
        return _split_variance(out, self.cfg.dim * self.cfg.out_per_channel, self.cfg.learned_variance)


def build_net(cfg: dict) -> nn.Module:
    """A network from its config dict (as stored in checkpoints: plain python types)."""
    cfg = dict(cfg)
    kind = cfg.pop("kind", "unet")
    for key in ("channel_mults", "attention_res"):
        if key in cfg:
            cfg[key] = tuple(cfg[key])
    if kind == "unet":
        return UNetEps(UNetConfig(**cfg))
    if kind == "mlp":
        return MLPEps(MLPConfig(**cfg))
    raise ValueError(f"unknown network kind {kind!r} (expected 'unet' or 'mlp')")


def net_config_dict(cfg: UNetConfig | MLPConfig) -> dict:
    """A config as plain python types (lists, ints, floats, str) for a weights_only checkpoint."""
    d = asdict(cfg)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

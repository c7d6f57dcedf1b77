"""DDPM checkpoints: plain dicts of tensors and python types (``torch.load(..., weights_only=True)`` only),
written atomically (:func:`elbo_lab.io.atomic_torch_save`).

``DIR/last.pt`` holds the full training state (network, EMA, optimizer, step, generator states, sampler history,
data order, config, metric history) for exact resume; ``DIR/best.pt`` holds the EMA network with the best
held-out bound (what ``bound`` and ``sample`` use).  Both carry ``format``/``version`` and everything needed to
rebuild the model: the training config, the network config, the data description and the device.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import CheckpointError
from ..io import atomic_torch_save, load_checkpoint_file
from ..options import MAX_LEVELS, MAX_T
from .model import EpsModel, build_eps_model, make_schedule

__all__ = [
    "FORMAT",
    "VERSION",
    "load_checkpoint",
    "load_model",
    "resolve_checkpoint",
    "save_checkpoint",
    "validate_checkpoint",
]

FORMAT = "elbo-lab-ddpm"
VERSION = 1
REQUIRED = ("format", "version", "config", "net_config", "data", "ema")


def save_checkpoint(path: str | Path, state: dict) -> Path:
    """Atomically write ``state`` (format and version added)."""
    return atomic_torch_save(path, {"format": FORMAT, "version": VERSION, **state})


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run directory (→ its ``best.pt``, else ``last.pt``)."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).is_file():
                return path / name
        raise CheckpointError(f"{path}: no best.pt or last.pt in this directory")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    return path


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load and check a DDPM checkpoint (weights_only); :class:`CheckpointError` if corrupt, foreign or too new."""
    path = resolve_checkpoint(path)
    ckpt = load_checkpoint_file(
        path, format=FORMAT, version=VERSION, required=REQUIRED, what="DDPM", map_location=map_location
    )
    return ckpt


def schedule_from_config(cfg: dict):
    return make_schedule(
        cfg["schedule"], cfg["T"], beta_start=cfg["beta_start"], beta_end=cfg["beta_end"], s=cfg["cosine_s"]
    )


VARIANCES = ("posterior", "beta", "learned")
PARAMS = ("eps", "categorical")
SCHEDULES = ("linear", "cosine")


def validate_checkpoint(ckpt: dict, path, weights: str = "ema") -> None:
    """Check that a checkpoint's parts agree before a model is built from it (:class:`CheckpointError`):
    the config's names (variance, output, schedule), T within range and equal to the T the network's time
    embedding was built for, the variance head present exactly when the variance is learned, K outputs per value
    for the categorical head, the data description, and every weight finite (no NaN/Inf)."""
    cfg, net, data = ckpt.get("config"), ckpt.get("net_config"), ckpt.get("data")
    if not all(isinstance(d, dict) for d in (cfg, net, data)):
        raise CheckpointError(f"{path}: config, net_config and data must be dicts")

    def bad(what: str):
        raise CheckpointError(f"{path}: inconsistent checkpoint ({what})")

    for key, allowed in (("variance", VARIANCES), ("param", PARAMS), ("schedule", SCHEDULES)):
        if cfg.get(key) not in allowed:
            bad(f"{key} {cfg.get(key)!r} is not one of {', '.join(allowed)}")
    T = cfg.get("T")
    if isinstance(T, bool) or not isinstance(T, int) or not 2 <= T <= MAX_T:
        bad(f"T = {T!r}, expected an integer in 2..{MAX_T}")
    if net.get("T") != T:
        bad(f"the config says T = {T} but the network's time embedding was built for T = {net.get('T')!r}")
    if bool(net.get("learned_variance")) != (cfg["variance"] == "learned"):
        bad(
            f"variance {cfg['variance']!r} but the network "
            f"{'has' if net.get('learned_variance') else 'lacks'} a variance head"
        )
    levels, shape = data.get("levels"), data.get("shape")
    if isinstance(levels, bool) or not isinstance(levels, int) or not 2 <= levels <= MAX_LEVELS:
        bad(f"data levels {levels!r}")
    if not isinstance(shape, (list, tuple)) or not shape or not all(isinstance(d, int) and d > 0 for d in shape):
        bad(f"data shape {shape!r}")
    expected_out = levels if cfg["param"] == "categorical" else 1
    if net.get("out_per_channel") != expected_out:
        bad(
            f"{cfg['param']} output needs {expected_out} outputs per value, "
            f"the network has {net.get('out_per_channel')!r}"
        )
    state = ckpt.get(weights)
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{path}: the checkpoint holds no {weights!r} weights")
    for name, t in state.items():
        if not torch.is_tensor(t):
            bad(f"weight {name} is a {type(t).__name__}, not a tensor")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"{path}: the {weights} weights are not finite (NaN or Inf in {name})")


def load_model(path: str | Path, device="cpu", *, weights: str = "ema") -> tuple[EpsModel, dict]:
    """(EpsModel in eval mode on ``device``, checkpoint dict) from a checkpoint; ``weights`` "ema" or "model".
    The checkpoint is checked first (:func:`validate_checkpoint`)."""
    ckpt = load_checkpoint(path)
    cfg = ckpt["config"]
    if weights not in ckpt or ckpt[weights] is None:
        raise CheckpointError(f"{path}: the checkpoint holds no {weights!r} weights")
    validate_checkpoint(ckpt, path, weights)
    try:
        schedule = schedule_from_config(cfg)
        model = build_eps_model(
            ckpt["net_config"],
            schedule,
            param=cfg["param"],
            levels=ckpt["data"]["levels"],
            device=device,
            amp=cfg.get("amp", True) and torch.device(device).type == "cuda",
        )
        model.net.load_state_dict(ckpt[weights])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: incompatible checkpoint ({first[:160]})") from None
    return model.eval(), ckpt

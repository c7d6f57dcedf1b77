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
from .model import EpsModel, build_eps_model, make_schedule

__all__ = ["FORMAT", "VERSION", "load_checkpoint", "load_model", "resolve_checkpoint", "save_checkpoint"]

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


def load_model(path: str | Path, device="cpu", *, weights: str = "ema") -> tuple[EpsModel, dict]:
    """(EpsModel in eval mode on ``device``, checkpoint dict) from a checkpoint; ``weights`` "ema" or "model"."""
    ckpt = load_checkpoint(path)
    cfg = ckpt["config"]
    if weights not in ckpt or ckpt[weights] is None:
        raise CheckpointError(f"{path}: the checkpoint holds no {weights!r} weights")
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

"""DDPM on real data: the ε-model wrapper (ε or categorical-x_0 output), training with L_simple / L_vlb / hybrid,
EMA, exact resume, checkpoints, ancestral sampling.  Every diffusion formula comes from the engine
(:mod:`elbo_lab.diffusion`, :mod:`elbo_lab.bound`); this package only composes them.
"""

from .checkpoint import load_checkpoint, load_model
from .model import EpsModel, make_schedule, resolve_device
from .train import TrainConfig, train

__all__ = ["EpsModel", "TrainConfig", "load_checkpoint", "load_model", "make_schedule", "resolve_device", "train"]

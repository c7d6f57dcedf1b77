"""ELBO Lab: the mathematics of diffusion models, derived (SymPy), implemented (PyTorch) and cross-checked.

Layers (imports point down): ``symbolic`` (SymPy derivations) → numeric core (``gaussian``, ``schedule``,
``diffusion``, ``bound``, ``vae``) → models, data, training → oracles → checks → experiments, report, CLI.
Units: nats inside; bits/dim = nats / (D · ln 2).
"""

__version__ = "0.1.0"

from .bound import BoundResult, ModelSpec, variational_bound  # noqa: E402
from .schedule import NoiseSchedule  # noqa: E402

__all__ = ["BoundResult", "ModelSpec", "NoiseSchedule", "variational_bound"]

"""Step-checked SymPy derivations of every equation on the guide's path (../shared/DESIGN.md, E1-E12).

Usage::

    from elbo_lab.symbolic import get, names, verify_all
    d = get("posterior")                  # build (cached); nothing is checked yet
    report = d.verify()                   # run every step's SymPy proof
    mean = d.numpy("mean")                # lambdified result, argument order in d.result("mean").args

Each module ``elbo_lab.symbolic.<name>`` defines ``build(**claims) -> Derivation``. ``claims`` override the
claimed (textbook) expressions so that tests can feed deliberately wrong steps and see them fail.
"""

from __future__ import annotations

import importlib
import time
from functools import cache

from .core import (
    Check,
    Derivation,
    DerivationReport,
    Result,
    Step,
    coefficients_equal,
    equal,
    holds,
    integral_equals,
    is_zero,
    limit_equals,
)

# name -> equation id (module elbo_lab.symbolic.<name>).  Order = the guide's order.
REGISTRY: dict[str, str] = {
    "gaussian_kl": "E1",
    "reparameterization": "E2",
    "vae_elbo": "E3",
    "linear_gaussian": "E4",
    "forward_marginal": "E5",
    "posterior": "E6",
    "telescoping": "E7",
    "mean_matching": "E8",
    "eps_weight": "E9",
    "simple_loss": "E10",
    "sampling_step": "E11",
    "continuous_time": "E12",
}


def names() -> list[str]:
    """Valid derivation names, in the guide's order."""
    return list(REGISTRY)


class UnknownDerivation(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; we want a plain line
        return self.args[0]


def build(name: str, **claims) -> Derivation:
    """Build derivation ``name`` afresh (``claims`` override claimed expressions; used by the tests)."""
    if name not in REGISTRY:
        raise UnknownDerivation(f"unknown derivation {name!r}; valid names: {', '.join(REGISTRY)}")
    module = importlib.import_module(f"{__name__}.{name}")
    t0 = time.perf_counter()
    d = module.build(**claims)
    d.build_seconds = time.perf_counter() - t0
    return d


@cache
def get(name: str) -> Derivation:
    """The derivation ``name`` with its textbook claims, built once per process."""
    return build(name)


def reference(derivation: str, result: str, **values):
    """Evaluate a derivation's exported result, lambdified for numpy, with arguments given by name (float64).

    The numeric code is tested against this: ``reference("posterior", "variance", beta=b, alpha_bar_prev=a)``.
    """
    import numpy as np

    r = get(derivation).result(result)
    missing = [a for a in r.arg_names if a not in values]
    if missing:
        raise TypeError(f"{derivation}.{result} needs {', '.join(missing)} (arguments {r.arg_names})")
    return np.asarray(r.numpy(*[values[a] for a in r.arg_names]), dtype=np.float64)


def verify_all(selected: list[str] | None = None) -> list[DerivationReport]:
    return [get(n).verify() for n in (selected or names())]


__all__ = [
    "Check",
    "Derivation",
    "DerivationReport",
    "REGISTRY",
    "Result",
    "Step",
    "UnknownDerivation",
    "build",
    "coefficients_equal",
    "equal",
    "get",
    "holds",
    "integral_equals",
    "is_zero",
    "limit_equals",
    "names",
    "reference",
    "verify_all",
]

"""Claim registry: ``@claim(...)`` registers a function ``fn(seed) -> ClaimResult`` (see :mod:`elbo_lab.checks`)."""

from __future__ import annotations

import importlib
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

__all__ = [
    "CLAIMS",
    "Claim",
    "ClaimResult",
    "claim",
    "relative_error",
    "run_claims",
    "within_relative",
    "within_stderr",
]

# modules that register claims when imported (in report order)
CLAIM_MODULES = [
    "elbo_lab.checks.symbolic_claims",
    "elbo_lab.checks.numeric_claims",
    "elbo_lab.checks.formula_claims",
    "elbo_lab.checks.model_claims",
]


@dataclass
class ClaimResult:
    expected: str
    observed: str
    tolerance: str
    passed: bool
    detail: str = ""
    values: dict = field(default_factory=dict)  # raw numbers for results.json


@dataclass
class Claim:
    id: str
    equation: str  # "E1".."E12" or "-" for claims about models
    statement: str
    derivation: str  # elbo_lab.symbolic name, or ""
    numeric: str  # the numeric function under test
    estimator: str  # "exact", "Monte Carlo", ...
    fn: Callable[[int], ClaimResult]


CLAIMS: dict[str, Claim] = {}


def claim(id: str, *, equation: str, statement: str, derivation: str = "", numeric: str = "", estimator="exact"):
    def deco(fn: Callable[[int], ClaimResult]):
        if id in CLAIMS:
            raise ValueError(f"duplicate claim id {id!r}")
        CLAIMS[id] = Claim(id, equation, statement, derivation, numeric, estimator, fn)
        return fn

    return deco


def load_all() -> dict[str, Claim]:
    for m in CLAIM_MODULES:
        try:
            importlib.import_module(m)
        except ModuleNotFoundError as exc:
            if exc.name != m:
                raise
    return CLAIMS


@dataclass
class ClaimRecord:
    id: str
    equation: str
    statement: str
    derivation: str
    numeric: str
    estimator: str
    expected: str
    observed: str
    tolerance: str
    passed: bool
    detail: str
    seconds: float
    values: dict

    def to_dict(self) -> dict:
        return asdict(self)


def run_claims(seed: int = 0, selected: list[str] | None = None, progress=None) -> list[ClaimRecord]:
    """Run the registered claims (all, or those whose id starts with one of ``selected``)."""
    load_all()
    out = []
    for c in CLAIMS.values():
        if selected and not any(c.id == s or c.id.startswith(s.rstrip(".") + ".") for s in selected):
            continue
        t0 = time.perf_counter()
        try:
            r = c.fn(seed)
        except Exception as exc:  # a claim that crashes has failed; keep the rest running
            tb = traceback.format_exception_only(type(exc), exc)[-1].strip()
            r = ClaimResult("-", "error", "-", False, tb)
        rec = ClaimRecord(
            c.id,
            c.equation,
            c.statement,
            c.derivation,
            c.numeric,
            c.estimator,
            r.expected,
            r.observed,
            r.tolerance,
            bool(r.passed),
            r.detail,
            time.perf_counter() - t0,
            r.values,
        )
        out.append(rec)
        if progress:
            progress(rec)
    return out


def relative_error(a, b) -> float:
    import numpy as np

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


def within_stderr(estimate: float, stderr: float, exact: float, k: float = 4.0, unit: str = "") -> ClaimResult:
    """|estimate − exact| < k·stderr, formatted as a ClaimResult; ``unit`` ("nats", "bits/dim", ...) follows each
    number in the claim table."""
    ok = abs(estimate - exact) < k * stderr
    u = f" {unit}" if unit else ""
    return ClaimResult(
        f"{exact:.6g}{u}",
        f"{estimate:.6g} ± {stderr:.2g}{u}",
        f"|Δ| < {k:g}·stderr",
        ok,
        f"|Δ| = {abs(estimate - exact):.3g} = {abs(estimate - exact) / stderr:.2f} stderr",
        {"exact": exact, "estimate": estimate, "stderr": stderr},
    )


def within_relative(observed, expected, tol: float, reference: str, detail: str) -> ClaimResult:
    """max |observed − expected| / |expected| ≤ ``tol``, formatted as a ClaimResult (``reference`` names the
    independent side: "SymPy (lambdified)", "torch.distributions", ...)."""
    err = relative_error(observed, expected)
    return ClaimResult(
        reference, f"max rel. error {err:.1e}", f"≤ {tol:g}", err <= tol, detail, {"max_relative_error": err}
    )

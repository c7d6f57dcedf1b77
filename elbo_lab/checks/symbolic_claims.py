"""Claims about the symbolic layer: every derivation's steps check (one claim per derivation)."""

from __future__ import annotations

from ..symbolic import REGISTRY, get
from .registry import ClaimResult, claim


def _derivation_claim(name: str, eq: str) -> None:
    @claim(
        f"{eq}.derivation",
        equation=eq,
        statement=f"every step of `{name}` is proven by SymPy",
        derivation=name,
        numeric="-",
        estimator="symbolic",
    )
    def _check(seed: int) -> ClaimResult:
        report = get(name).verify()
        n_ok = sum(s.checked for s in report.steps)
        bad = [s.step.statement for s in report.steps if not s.checked]
        return ClaimResult(
            f"{len(report.steps)}/{len(report.steps)} ✓",
            f"{n_ok}/{len(report.steps)} ✓",
            "exact",
            report.ok,
            "; ".join(bad) if bad else f"{report.seconds:.2f} s",
            {"steps": len(report.steps), "checked": n_ok, "seconds": report.seconds},
        )


for _name, _eq in REGISTRY.items():
    _derivation_claim(_name, _eq)

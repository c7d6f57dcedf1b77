"""Layer 5: the registry of claims.

A claim names the equation, the derivation, the numeric function, the estimator and the tolerance rule, and
returns observed vs. expected with a pass/fail.  ``elbo-lab verify`` runs them all as a table; ``elbo-lab run``
puts them at the top of the report.  Claims are small (seconds in total) and seeded.
"""

from .registry import CLAIMS, Claim, ClaimResult, claim, run_claims

__all__ = ["CLAIMS", "Claim", "ClaimResult", "claim", "run_claims"]

"""A fast coefficient check for low-degree polynomial identities whose coefficients carry square roots.

``coefficients_equal`` (core) expands the whole difference first; with nested √(1 − ᾱ_t) in the coefficients that
expansion dominates (seconds).  Here a polynomial of total degree ≤ n in ``gens`` is shown to vanish identically
by checking that every Taylor coefficient at 0 (all partial derivatives of order ≤ n) simplifies to 0, which is
equivalent and takes milliseconds.  Used by E9-E11 (``eps_weight``, ``sampling_step``).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import sympy as sp

from .core import _SIMPLIFIERS, Check, _lhs_minus_rhs


def polynomial_identity(a: sp.Expr, b: sp.Expr, gens: Sequence[sp.Symbol], degree: int, *, method="cancel") -> Check:
    """Check ``a == b`` as polynomials of total degree ≤ ``degree`` in ``gens`` (all Taylor coefficients at 0)."""
    gens = tuple(gens)
    simplifier = _SIMPLIFIERS[method]

    def fn() -> tuple[bool, str]:
        diff = _lhs_minus_rhs(a, b)
        at0 = {g: 0 for g in gens}
        # beyond the claimed degree every derivative must vanish too: check one order higher
        n_checked, bad = 0, []
        for order in range(degree + 2):
            for combo in itertools.combinations_with_replacement(gens, order):
                term = sp.diff(diff, *combo) if combo else diff
                if order <= degree:
                    term = term.subs(at0)
                n_checked += 1
                if simplifier(term) != 0:
                    bad.append(combo)
        if bad:
            return False, f"{len(bad)} of {n_checked} Taylor coefficients differ, e.g. d/d{bad[0]}"
        return True, f"all {n_checked} Taylor coefficients in {', '.join(map(str, gens))} (order ≤ {degree + 1}) agree"

    return Check(f"polynomial identity in ({', '.join(map(str, gens))}), degree ≤ {degree}", fn)

"""Fast exact comparison of log-densities (used by E5-E7).

A sum of Gaussian log-densities is a polynomial in the variables (x's) whose coefficients are rational
functions of the parameters, plus rational multiples of logs (the normalisers ``-½ log(2π var)``).
``simplify`` of such identities takes seconds to minutes (the E7 chains), and ``cancel`` cannot see that
``log(a) + log(b) - log(a b) == 0``.  Here an identity ``a == b`` is proved exactly in two parts:

1. the log-free part of ``a - b`` is converted to a polynomial in the variables over the *field of rational
   functions* of the parameters (``QQ(params)[x...]``) and must be the zero polynomial -- sparse polynomial
   arithmetic, no ``simplify``;
2. the log part ``Σ_j w_j log(A_j)`` (``w_j`` rational numbers) must satisfy ``Π_j A_j^(k w_j) == 1`` in that
   field (``k`` clears the denominators of the ``w_j``).

A positive symbol ``p`` that appears under a square root is replaced by ``p_**2`` first (``√p = p_``,
exact for ``p > 0``), so that every coefficient is a rational function.  Any failure to convert (a term
that is not of this shape) raises, and a raising check counts as *not proven*.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import reduce

import sympy as sp

from .core import Check

_PI = sp.Symbol("pi_", positive=True)


def _flat_terms(e: sp.Expr, scale: sp.Expr | None = None, out: list | None = None) -> list:
    """The terms of ``e`` with numeric factors distributed over nested sums (no expansion of products)."""
    out = [] if out is None else out
    scale = sp.Integer(1) if scale is None else scale
    if isinstance(e, sp.Add):
        for arg in e.args:
            _flat_terms(arg, scale, out)
    elif isinstance(e, sp.Mul):
        coeff, rest = e.as_coeff_Mul()
        if isinstance(rest, sp.Add):
            _flat_terms(rest, scale * coeff, out)
        else:
            out.append(scale * e)
    else:
        out.append(scale * e)
    return out


def _radical_subs(exprs: Sequence[sp.Expr]) -> dict:
    """p -> p_**q for each positive symbol p that appears under a fractional power with denominator q."""
    denominators: dict[sp.Symbol, int] = {}
    for e in exprs:
        for p in sp.sympify(e).atoms(sp.Pow):
            if p.base.is_Symbol and p.exp.is_Rational and not p.exp.is_Integer:
                if not p.base.is_positive:
                    raise ValueError(f"fractional power of a symbol not declared positive: {p}")
                denominators[p.base] = sp.ilcm(denominators.get(p.base, 1), p.exp.q)
    return {s: sp.Symbol(f"{s.name}_", positive=True) ** q for s, q in denominators.items()}


def _rationalize(e: sp.Expr, subs: dict) -> sp.Expr:
    return sp.sympify(e).xreplace({sp.pi: _PI, **subs})


def split_logs(e: sp.Expr) -> tuple[dict[sp.Expr, sp.Rational], sp.Expr]:
    """``(weights, rest)`` with ``e == Σ weights[A] log(A) + rest``; raises if a log's weight is not a number."""
    weights: dict[sp.Expr, sp.Rational] = {}
    rest = []
    for term in _flat_terms(sp.sympify(e)):
        if not term.has(sp.log):
            rest.append(term)
            continue
        coeff, factor = term.as_coeff_Mul()
        if not (isinstance(factor, sp.log) and coeff.is_Rational):
            raise ValueError(f"term is not a rational multiple of a log: {term}")
        arg = factor.args[0]
        weights[arg] = weights.get(arg, sp.Integer(0)) + coeff
    return weights, sp.Add(*rest)


class LogPoly:
    """``poly + Σ_j w_j log(A_j)``: ``poly`` in a ring QQ(params)[gens], ``w_j`` rational, ``A_j`` free of gens.

    Build through :class:`LogAlgebra`; compare with :meth:`residual`.
    """

    def __init__(self, ring, poly, logs: dict):
        self.ring, self.poly, self.logs = ring, poly, logs

    def __add__(self, other: LogPoly) -> LogPoly:
        logs = dict(self.logs)
        for a, w in other.logs.items():
            logs[a] = logs.get(a, sp.Integer(0)) + w
        return LogPoly(self.ring, self.poly + other.poly, logs)

    def __neg__(self) -> LogPoly:
        return LogPoly(self.ring, -self.poly, {a: -w for a, w in self.logs.items()})

    def __sub__(self, other: LogPoly) -> LogPoly:
        return self + (-other)

    def expect(self, gens: Sequence[int], first: dict, second: dict) -> LogPoly:
        """E[self] over the ring generators with indices ``gens`` (degree <= 2), given E[g_i] = ``first[i]`` and
        E[g_i g_j] = ``second[(i, j)]`` (i <= j) as ring elements; the other generators stay."""
        gens = tuple(gens)
        total = self.ring.zero
        for monom, coeff in self.poly.terms():
            idx = [i for i in gens for _ in range(monom[i])]
            kept = tuple(0 if i in gens else k for i, k in enumerate(monom))
            if len(idx) > 2:
                raise ValueError("expectation of a monomial of degree > 2 needs higher moments")
            moment = self.ring.one if not idx else first[idx[0]] if len(idx) == 1 else second[(idx[0], idx[1])]
            total += self.ring({kept: coeff}) * moment
        return LogPoly(self.ring, total, dict(self.logs))

    def residual(self) -> str | None:
        """``None`` when this is identically zero, else why not."""
        if self.poly != 0:
            terms = self.poly.terms()
            return f"{len(terms)} coefficient(s) differ, e.g. at monomial {terms[0][0]} of {self.ring.symbols}"
        log_args = [a for a, w in self.logs.items() if w != 0]
        if log_args:
            k = reduce(sp.ilcm, [self.logs[a].q for a in log_args], 1)
            subs = _radical_subs(log_args)  # the log part is an identity of its own: rationalize it separately
            args = {a: _rationalize(a, subs) for a in log_args}
            field = sp.QQ.frac_field(*sorted(set().union(*(a.free_symbols for a in args.values())), key=str))
            product = field.one
            for a in log_args:
                product *= field.from_sympy(args[a]) ** int(k * self.logs[a])
            if product != field.one:
                return f"log-normalisers differ: the product of their arguments is {field.to_sympy(product)}, not 1"
        return None


class LogAlgebra:
    """The ring QQ(params)[gens] shared by a set of expressions, and their conversion to :class:`LogPoly`.

    A radical of a sum (√(1 - ᾱ)) becomes an extra parameter: sound (an identity in the free field holds after
    specialising it), though it could miss an identity that needs its square.
    """

    def __init__(self, exprs: Sequence[sp.Expr], gens: Sequence[sp.Symbol]):
        from sympy.polys.rings import ring

        self.gens = tuple(gens)
        rests = [split_logs(e)[1] for e in exprs]
        self.subs = _radical_subs(rests)
        rat = [_rationalize(e, self.subs) for e in rests]
        params = set().union(*(e.free_symbols for e in rat)) - set(self.gens)
        radicals = {p for e in rat for p in e.atoms(sp.Pow) if p.exp.is_Rational and not p.exp.is_Integer}
        for r in radicals:
            params -= r.free_symbols
        field_gens = sorted(params, key=str) + sorted(radicals, key=sp.default_sort_key)
        self.ring = ring(list(self.gens), sp.QQ.frac_field(*field_gens) if field_gens else sp.QQ)[0]

    def __call__(self, expr: sp.Expr) -> LogPoly:
        weights, rest = split_logs(expr)
        return LogPoly(self.ring, self.poly(rest), weights)

    def poly(self, expr: sp.Expr):
        """A log-free expression as a ring element (e.g. a moment)."""
        return self.ring.from_expr(_rationalize(expr, self.subs)) if expr != 0 else self.ring.zero


def log_poly_residual(diff: sp.Expr, gens: Sequence[sp.Symbol]) -> str | None:
    """``None`` when ``diff`` is identically zero (see module docstring), else a short description of why not."""
    return LogAlgebra([diff], gens)(diff).residual()


def log_coefficients_equal(a: sp.Expr, b: sp.Expr, gens: Sequence[sp.Symbol], *, description: str | None = None):
    """Check ``a == b`` as log-densities: polynomials in ``gens`` over QQ(params) plus log-normalisers.

    Exact and fast (no ``simplify``); the E7 chains with T = 4 take ~0.1 s.
    """
    gens = tuple(gens)
    names = ", ".join(map(str, gens))

    def fn() -> tuple[bool, str]:
        why = log_poly_residual(sp.sympify(a) - sp.sympify(b), gens)
        if why is not None:
            return False, why
        return True, f"equal as polynomials in {names} over QQ(parameters); log-normalisers cancel"

    return Check(description or f"coefficients in ({names}) agree over QQ(parameters), logs included", fn)


def quadratic_coeffs(expr: sp.Expr, var: sp.Symbol) -> tuple[sp.Expr, sp.Expr, sp.Expr]:
    """``(c2, c1, c0)`` with ``expr == c2 var² + c1 var + c0``; raises if ``expr`` is not quadratic in ``var``."""
    poly = sp.Poly(sp.expand(expr), var)
    if poly.degree() > 2:
        raise ValueError(f"expression is of degree {poly.degree()} in {var}, expected <= 2")
    c = [poly.coeff_monomial(var**k) for k in (2, 1, 0)]
    return c[0], c[1], c[2]

"""Gaussian integrals for the VAE-route derivations (E2-E4): every value here comes from a SymPy ``integrate``.

Not a derivation itself (it is not in the registry); the derivations that use these tools prove, in their own
steps, the facts the tools rely on:

- :func:`expect_normal` -- E_{N(mean, var)}[f(z)] for f polynomial in z, by the substitution
  z = mean + sqrt(var) u (E2 ``reparameterization`` proves that this z has the law N(mean, var)) and the
  moments of the standard normal, each integrated by SymPy (~0.05 s each, cached).
- :func:`expect_normal_direct` -- the same expectation by an independent route: the moments of N(mean, var)
  integrated directly in z (no substitution), used by the checks.
- :func:`complete_square` -- a quadratic a z² + c z + k0 rewritten as a (z − centre)² + const.
- :func:`log_integral_exp_quadratic` -- log ∫ exp(a (z − centre)² + const) dz = const + log √(π/(−a)), with
  ∫ exp(−A y²) dy integrated by SymPy.

Checks (each a :class:`~.core.Check` that returns False when the identity is wrong):

- :func:`log_equal` / :func:`coefficients_log_equal` -- identities between sums of rational functions and logs
  of positive expressions (log-densities): logs split into logs of irreducible factors, denominators cleared,
  the polynomial must vanish.  Milliseconds where ``simplify`` takes seconds.
- :func:`completes_square` -- ``quad == a (z − centre)² + const`` coefficient by coefficient.

The integrals are cached per process (the first derivation to use them pays ~0.1-0.3 s).

Log-densities of Gaussians are quadratic polynomials in their variable, so every expectation in the VAE route
is a finite sum of moments.  Expanding first is what keeps these derivations fast (well under a second);
integrating the raw log-ratio against a density takes seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, reduce

import sympy as sp

from .core import Check
from .gaussian_kl import normal_pdf

__all__ = [
    "Square",
    "coefficients",
    "coefficients_log_equal",
    "complete_square",
    "completes_square",
    "log_equal",
    "expect_normal",
    "expect_normal_direct",
    "gaussian_integral",
    "log_integral_exp_quadratic",
    "normal_moment",
    "standard_normal_moment",
    "tidy",
]

_u = sp.Symbol("u", real=True)
_y = sp.Symbol("y", real=True)
_A = sp.Symbol("A", positive=True)
_M = sp.Symbol("M", real=True)
_V = sp.Symbol("V", positive=True)
_z = sp.Symbol("z", real=True)


@cache
def standard_normal_moment(k: int) -> sp.Expr:
    """E[u^k] for u ~ N(0, 1): ∫ u^k φ(u) du, integrated by SymPy."""
    return sp.integrate(_u**k * normal_pdf(_u, 0, 1), (_u, -sp.oo, sp.oo))


@cache
def _generic_normal_moment(k: int) -> sp.Expr:
    return sp.simplify(sp.integrate(_z**k * normal_pdf(_z, _M, _V), (_z, -sp.oo, sp.oo)))


def normal_moment(k: int, mean: sp.Expr, var: sp.Expr) -> sp.Expr:
    """E[z^k] for z ~ N(mean, var), integrated directly in z (generic mean and variance, then substituted)."""
    return _generic_normal_moment(k).subs({_M: mean, _V: var})


def coefficients(expr: sp.Expr, var: sp.Symbol) -> dict[int, sp.Expr]:
    """{k: coefficient of var**k} of ``expr`` expanded as a polynomial in ``var`` (ValueError if it is not one).

    Splits the expanded sum term by term -- several times faster than ``sp.Poly`` when the coefficients hold
    logarithms (the Poly domain construction dominates there).
    """
    out: dict[int, list[sp.Expr]] = {}
    for term in sp.Add.make_args(sp.expand(expr)):
        coeff, power = term.as_independent(var, as_Add=False)
        if power == 1:
            k = 0
        elif power == var:
            k = 1
        elif power.is_Pow and power.base == var and power.exp.is_Integer and power.exp > 0:
            k = int(power.exp)
        else:
            raise ValueError(f"not a polynomial in {var}: term {term}")
        out.setdefault(k, []).append(coeff)
    return {k: sp.Add(*cs) for k, cs in sorted(out.items())}


def expect_normal(expr: sp.Expr, z: sp.Symbol, mean: sp.Expr, var: sp.Expr) -> sp.Expr:
    """E_{z ~ N(mean, var)}[expr] for ``expr`` polynomial in ``z``.

    Substitute z = mean + √var·u and integrate each power of u against N(0, 1).
    """
    coeffs = coefficients(expr.xreplace({z: mean + sp.sqrt(var) * _u}), _u)
    return sp.expand(sp.Add(*(c * standard_normal_moment(k) for k, c in coeffs.items())))


def expect_normal_direct(expr: sp.Expr, z: sp.Symbol, mean: sp.Expr, var: sp.Expr) -> sp.Expr:
    """E_{z ~ N(mean, var)}[expr] by the moments of N(mean, var) integrated in z (independent of the substitution)."""
    coeffs = coefficients(expr, z)
    return sp.expand(sp.Add(*(c * normal_moment(k, mean, var) for k, c in coeffs.items())))


@dataclass(frozen=True)
class Square:
    """``a (z − centre)² + const`` -- a quadratic in ``z`` with its square completed."""

    z: sp.Symbol
    a: sp.Expr
    centre: sp.Expr
    const: sp.Expr

    @property
    def expr(self) -> sp.Expr:
        return self.a * (self.z - self.centre) ** 2 + self.const


def complete_square(quad: sp.Expr, z: sp.Symbol) -> Square:
    """Rewrite ``quad`` (degree 2 in ``z``) as a (z − centre)² + const from its polynomial coefficients."""
    coeffs = coefficients(quad, z)
    if max(coeffs) != 2:
        raise ValueError(f"expected a quadratic in {z}, got degree {max(coeffs)}")
    a, c, k0 = coeffs[2], coeffs.get(1, sp.Integer(0)), coeffs.get(0, sp.Integer(0))
    a = sp.factor(a)
    return Square(z, a, sp.factor(-c / (2 * a)), sp.expand(k0 - c**2 / (4 * a)))


@cache
def gaussian_integral() -> tuple[sp.Symbol, sp.Expr]:
    """(A, ∫ exp(−A y²) dy) with A > 0, integrated by SymPy (= √(π/A))."""
    return _A, sp.integrate(sp.exp(-_A * _y**2), (_y, -sp.oo, sp.oo))


def log_integral_exp_quadratic(sq: Square) -> sp.Expr:
    """log ∫ exp(a (z − centre)² + const) dz for a < 0: const + log ∫ exp(a y²) dy (shift y = z − centre)."""
    A, integral = gaussian_integral()
    return sp.expand(sq.const + sp.expand_log(sp.log(integral.subs(A, sp.factor(-sq.a))), force=True))


def _split_log(arg: sp.Expr) -> sp.Expr:
    """log of a positive expression as a sum of logs of its irreducible factors and of primes."""
    out = []
    for f in sp.Mul.make_args(sp.factor(arg)):
        base, e = f.as_base_exp()
        if base.is_Rational:
            num, den = base.as_numer_denom()
            out += [e * k * sp.log(p) for p, k in sp.factorint(num).items()]
            out += [-e * k * sp.log(p) for p, k in sp.factorint(den).items()]
        else:
            out.append(e * sp.log(base))
    return sp.Add(*out)


def _normal_form(expr: sp.Expr) -> sp.Expr:
    """D·expr expanded, D the lcm of the denominators, after every log is split into logs of irreducible factors.

    Zero exactly when ``expr`` is zero as a rational function of its symbols and those log atoms.  Much faster
    than ``cancel(together(expr))`` (which spends its time in gcd_terms) on these expressions.
    """
    expr = sp.expand(sp.sympify(expr))
    expr = sp.expand(expr.replace(lambda t: isinstance(t, sp.log), lambda t: _split_log(t.args[0])))
    pairs = [t.as_numer_denom() for t in sp.Add.make_args(expr)]
    dens = {den for _, den in pairs}
    lcm = reduce(sp.lcm, dens, sp.Integer(1))
    multiplier = {den: lcm / den if lcm.is_number else sp.quo(lcm, den) for den in dens}
    return sp.expand(sp.Add(*(num * multiplier[den] for num, den in pairs)))


def log_equal(a: sp.Expr, b: sp.Expr) -> Check:
    """Check ``a == b`` for sums of rational functions and logs of positive expressions (log-densities).

    Each log's argument is factored and split (log(p·q/r) = log p + log q − log r), after which the logs of
    irreducible factors are independent atoms; multiplying by the common denominator leaves a polynomial that
    is zero exactly when the identity holds.  Much faster than ``simplify``; a wrong coefficient or log term
    leaves a non-zero residual.
    """

    def fn() -> tuple[bool, str]:
        residual = _normal_form(sp.sympify(a) - sp.sympify(b))
        ok = residual == 0
        return ok, "residual = 0 (logs split, denominators cleared)" if ok else f"residual = {sp.sstr(residual)[:300]}"

    return Check("split logs, clear denominators: before - after == 0", fn)


def tidy(expr: sp.Expr) -> sp.Expr:
    """An equal, readable form of a log-density-like expression: logs split, the rest over one denominator."""
    e = sp.expand(sp.expand_log(sp.expand(expr), force=True))
    logs, rest = [], []
    for term in sp.Add.make_args(e):
        (logs if term.has(sp.log) else rest).append(term)
    return sp.factor(sp.Add(*rest)) + sp.Add(*logs)


def coefficients_log_equal(a: sp.Expr, b: sp.Expr, var: sp.Symbol) -> Check:
    """Check ``a == b`` as polynomials in ``var``: each coefficient of ``a − b`` vanishes.

    Each coefficient is brought to a common denominator separately (see :func:`log_equal`).
    """

    def fn() -> tuple[bool, str]:
        coeffs = coefficients(sp.sympify(a) - sp.sympify(b), var)
        bad = [k for k, c in coeffs.items() if _normal_form(c) != 0]
        if bad:
            return False, f"coefficient of {var}^{bad[0]} differs ({len(bad)} of {len(coeffs)})"
        return True, f"all {len(coeffs)} coefficients in {var} agree (logs split, denominators cleared)"

    return Check(f"coefficients in {var} agree (logs split, denominators cleared)", fn)


def completes_square(quad: sp.Expr, sq: Square) -> Check:
    """Check ``quad == a (z − centre)² + const`` coefficient by coefficient without expanding the square:
    z²: a;  z: −2 a·centre;  1: a·centre² + const."""

    def fn() -> tuple[bool, str]:
        c = coefficients(quad, sq.z)
        if set(c) - {0, 1, 2}:
            return False, f"not a quadratic in {sq.z}"
        expected = {2: sq.a, 1: -2 * sq.a * sq.centre, 0: sq.a * sq.centre**2 + sq.const}
        bad = [k for k in (2, 1, 0) if _normal_form(c.get(k, 0) - expected[k]) != 0]
        if bad:
            return False, f"coefficient of {sq.z}^{bad[0]} differs"
        return True, f"coefficients of {sq.z}², {sq.z}, 1 agree with a, −2a·centre, a·centre² + const"

    return Check(f"compare coefficients in {sq.z} with the completed square", fn)

"""The symbolic layer's shared algebra: Gaussian densities, moments, completed squares, log-density identities.

Not a derivation (it is not in the registry); every formula the derivations share is written here once, and the
derivations prove, in their own steps, the facts these tools rely on.

Densities (the one symbolic definition of each):

- :func:`log_normal`, :func:`normal_pdf` -- log N(z; mean, var) and N(z; mean, var) (E1 exports ``log_density``).
- :func:`log_mvn` -- log N(x; mean, cov) from a covariance matrix (SymPy det/inv).

Polynomials in one variable, Gaussian expectations and integrals:

- :func:`coefficients` -- {k: coefficient of var**k}, by splitting the expanded sum term by term.
- :func:`expect_moments` -- E[f(var)] for f polynomial in var, from given moments E[var**k].
- :func:`expect_normal` -- E_{N(mean, var)}[f(z)] by z = mean + √var·u (E2 proves this z has the law N(mean, var))
  and the moments of the standard normal (:func:`standard_normal_moment`, each integrated by SymPy, cached).
- :func:`expect_normal_direct` -- the same expectation by an independent route: the moments of N(mean, var)
  integrated directly in z (:func:`normal_moment`).
- :func:`complete_square` -- a z² + c z + k0 as a (z − centre)² + const (:class:`Square`).
- :func:`gaussian_integral` / :func:`gaussian_integral_step` -- ∫ exp(−A y²) dy = √(π/A), integrated by SymPy,
  and the derivation step that states it.
- :func:`log_integral_exp_quadratic` -- log ∫ exp(a (z − centre)² + const) dz = const + log √(π/(−a)).

Identities between log-densities (exact, no ``simplify``):

- :func:`log_identity` -- a :class:`~.core.Check` that ``a == b`` for sums of Gaussian log-densities: polynomials in
  some variables (``gens``) whose coefficients are rational functions of the parameters, plus rational multiples
  of logs.  The polynomial part is compared in QQ(params)[gens] (sparse arithmetic), the log part as a product of
  the logs' arguments (``Σ w_j log A_j = 0`` iff ``Π A_j^(k w_j) = 1``).  Milliseconds where ``simplify`` takes
  seconds (E2-E4) or minutes (the E7 chains).  :func:`log_residual` is the same test returning the reason.
- :class:`LogAlgebra` / :class:`LogPoly` -- that representation, with exact expectations over Gaussian variables
  given their first and second moments (E7's chain expectations).
- :func:`completes_square` -- a Check that ``quad == a (z − centre)² + const``, coefficient by coefficient.
- :func:`tidy` -- a readable equal form of a log-density (logs split, the rest over one denominator).

Generic checks (``equal``, ``coefficients_equal``, ``integral_equals``, ...) live in :mod:`.core`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache, reduce

import sympy as sp

from .core import Check, Derivation, integral_equals

__all__ = [
    "LogAlgebra",
    "LogPoly",
    "Square",
    "coefficients",
    "complete_square",
    "completes_square",
    "expect_moments",
    "expect_normal",
    "expect_normal_direct",
    "gaussian_integral",
    "gaussian_integral_step",
    "log_identity",
    "log_integral_exp_quadratic",
    "log_mvn",
    "log_normal",
    "log_residual",
    "normal_moment",
    "normal_pdf",
    "standard_normal_moment",
    "tidy",
]

_u = sp.Symbol("u", real=True)
_y = sp.Symbol("y", real=True)
_A = sp.Symbol("A", positive=True)
_M = sp.Symbol("M", real=True)
_V = sp.Symbol("V", positive=True)
_z = sp.Symbol("z", real=True)
_PI = sp.Symbol("pi_", positive=True)  # π as a field generator in :class:`LogAlgebra`


# --------------------------------------------------------------------------------------------------------
# Gaussian densities
# --------------------------------------------------------------------------------------------------------


def log_normal(z, mean, var) -> sp.Expr:
    """log N(z; mean, var) = −½ log(2π var) − (z − mean)²/(2 var), nats."""
    return -sp.Rational(1, 2) * sp.log(2 * sp.pi * var) - (z - mean) ** 2 / (2 * var)


def normal_pdf(z, mean, var) -> sp.Expr:
    """N(z; mean, var) = exp(−(z − mean)²/(2 var)) / √(2π var)."""
    return sp.exp(-((z - mean) ** 2) / (2 * var)) / sp.sqrt(2 * sp.pi * var)


def log_mvn(xv: sp.Matrix, mean: sp.Matrix, cov: sp.Matrix) -> sp.Expr:
    """log N(x; mean, cov) from the matrix: −½ (D log 2π + log det cov + (x − mean)ᵀ cov⁻¹ (x − mean)), nats."""
    r = xv - mean
    quad = sp.cancel((r.T * cov.inv() * r)[0, 0])
    return -sp.Rational(1, 2) * (xv.rows * sp.log(2 * sp.pi) + sp.log(sp.factor(cov.det())) + quad)


# --------------------------------------------------------------------------------------------------------
# Polynomials in one variable; Gaussian expectations
# --------------------------------------------------------------------------------------------------------


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


@cache
def standard_normal_moment(k: int) -> sp.Expr:
    """E[u^k] for u ~ N(0, 1): ∫ u^k φ(u) du, integrated by SymPy."""
    return sp.integrate(_u**k * normal_pdf(_u, 0, 1), (_u, -sp.oo, sp.oo))


@cache
def _generic_normal_moment(k: int) -> sp.Expr:
    return sp.expand(sp.integrate(_z**k * normal_pdf(_z, _M, _V), (_z, -sp.oo, sp.oo)))


def normal_moment(k: int, mean: sp.Expr, var: sp.Expr) -> sp.Expr:
    """E[z^k] for z ~ N(mean, var), integrated directly in z (generic mean and variance, then substituted)."""
    return _generic_normal_moment(k).subs({_M: mean, _V: var})


def expect_moments(expr: sp.Expr, var: sp.Symbol, moments: Mapping[int, sp.Expr] | Callable[[int], sp.Expr]) -> sp.Expr:
    """E[expr] for ``expr`` polynomial in ``var``, given its moments ``moments[k]`` (or ``moments(k)``) = E[var**k].

    Linearity of expectation: Σ_k c_k E[var^k] with c_k the coefficients of ``expr`` in ``var``.
    """
    moment = moments.__getitem__ if isinstance(moments, Mapping) else moments
    return sp.expand(sp.Add(*(c * moment(k) for k, c in coefficients(expr, var).items())))


def expect_normal(expr: sp.Expr, z: sp.Symbol, mean: sp.Expr, var: sp.Expr) -> sp.Expr:
    """E_{z ~ N(mean, var)}[expr] for ``expr`` polynomial in ``z``: substitute z = mean + √var·u and integrate each
    power of u against N(0, 1)."""
    return expect_moments(expr.xreplace({z: mean + sp.sqrt(var) * _u}), _u, standard_normal_moment)


def expect_normal_direct(expr: sp.Expr, z: sp.Symbol, mean: sp.Expr, var: sp.Expr) -> sp.Expr:
    """E_{z ~ N(mean, var)}[expr] by the moments of N(mean, var) integrated in z (independent of the substitution)."""
    return expect_moments(expr, z, lambda k: normal_moment(k, mean, var))


# --------------------------------------------------------------------------------------------------------
# Completing the square; the Gaussian integral
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Square:
    """``a (z − centre)² + const`` -- a quadratic in ``z`` with its square completed.

    For a < 0 it is, up to ``const``, the log-density of N(centre, −1/(2a)) in z: :attr:`variance`.
    """

    z: sp.Symbol
    a: sp.Expr
    centre: sp.Expr
    const: sp.Expr

    @property
    def expr(self) -> sp.Expr:
        return self.a * (self.z - self.centre) ** 2 + self.const

    @property
    def variance(self) -> sp.Expr:
        """−1/(2a): the variance of the Gaussian whose log-density has this square."""
        return sp.factor(-1 / (2 * self.a))


def complete_square(quad: sp.Expr, z: sp.Symbol) -> Square:
    """Rewrite ``quad`` (degree 2 in ``z``) as a (z − centre)² + const from its polynomial coefficients:
    a z² + c z + k0 = a (z + c/(2a))² + k0 − c²/(4a)."""
    coeffs = coefficients(quad, z)
    if max(coeffs) != 2:
        raise ValueError(f"expected a quadratic in {z}, got degree {max(coeffs)}")
    a, c, k0 = coeffs[2], coeffs.get(1, sp.Integer(0)), coeffs.get(0, sp.Integer(0))
    a = sp.factor(a)
    return Square(z, a, sp.factor(-c / (2 * a)), k0 - c**2 / (4 * a))


@cache
def gaussian_integral() -> tuple[sp.Symbol, sp.Expr]:
    """(A, ∫ exp(−A y²) dy) with A > 0, integrated by SymPy (= √(π/A))."""
    return _A, sp.integrate(sp.exp(-_A * _y**2), (_y, -sp.oo, sp.oo))


def gaussian_integral_step(d: Derivation) -> None:
    """Append the step "∫ exp(−A y²) dy = √(π/A), A > 0" to ``d``: SymPy's integral compared with √(π/A)."""
    A, _ = gaussian_integral()
    d.step(
        "The Gaussian integral ∫ exp(−A y²) dy = √(π/A), A > 0",
        sp.sqrt(sp.pi / A),
        "SymPy integrate",
        integral_equals(sp.exp(-A * _y**2), _y, sp.sqrt(sp.pi / A)),
        kind="computed",
        before=sp.Integral(sp.exp(-A * _y**2), (_y, -sp.oo, sp.oo)),
    )


def log_integral_exp_quadratic(sq: Square) -> sp.Expr:
    """log ∫ exp(a (z − centre)² + const) dz for a < 0: const + log ∫ exp(a y²) dy (shift y = z − centre), with the
    Gaussian integral of :func:`gaussian_integral` at A = −a."""
    A, integral = gaussian_integral()
    # split the log while A is a positive symbol (½ log π − ½ log A), then substitute: −a stays one log argument,
    # whatever signs its factored form shows
    return sq.const + sp.expand_log(sp.log(integral)).subs(A, sp.factor(-sq.a))


# --------------------------------------------------------------------------------------------------------
# Identities between log-densities: QQ(params)[gens] plus log-normalisers
# --------------------------------------------------------------------------------------------------------


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


def _split_log(arg: sp.Expr, weight: sp.Rational, logs: dict, rest: list) -> None:
    """Add ``weight · log(arg)`` to ``logs`` ({argument: weight}) and ``rest`` (log-free terms).

    Only what the rational-function field cannot hold is split off: a factor exp(e) (real e) contributes e, a
    factor b^(p/q) with a non-integer exponent contributes (p/q) log b; the other factors stay one argument.
    """
    kept = []
    for f in sp.Mul.make_args(arg):
        base, ex = f.as_base_exp()
        if base is sp.E and ex.is_extended_real:
            rest.append(weight * ex)
        elif ex.is_Rational and not ex.is_Integer:
            _split_log(base, weight * ex, logs, rest)
        else:
            kept.append(f)
    kept_arg = sp.Mul(*kept)
    if kept_arg != 1:
        logs[kept_arg] = logs.get(kept_arg, sp.Integer(0)) + weight


def _split_logs(e: sp.Expr) -> tuple[dict[sp.Expr, sp.Rational], sp.Expr]:
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
        _split_log(factor.args[0], coeff, weights, rest)
    return weights, sp.Add(*rest)


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


class LogPoly:
    """``poly + Σ_j w_j log(A_j)``: ``poly`` in a ring QQ(params)[gens], ``w_j`` rational.

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
        E[g_i g_j] = ``second[(i, j)]`` (i <= j) as ring elements; the other generators stay.

        The multivariate, ring-level counterpart of :func:`expect_moments` (used for E7's chain expectations).
        """
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

    A positive symbol ``p`` under a square root is replaced by ``p_**2`` (``√p = p_``, exact for p > 0) so that
    every coefficient is a rational function; π becomes a positive symbol.  A radical of a sum (√(1 − ᾱ)) becomes an
    extra parameter: sound (an identity in the free field holds after specialising it), though it could miss an
    identity that needs its square (use :func:`.core.coefficients_equal` there).  A term not of this shape raises,
    and a raising check counts as *not proven*.
    """

    def __init__(self, exprs: Sequence[sp.Expr], gens: Sequence[sp.Symbol] = ()):
        from sympy.polys.rings import ring

        self.gens = tuple(gens)
        rests = [_split_logs(e)[1] for e in exprs]
        self.subs = _radical_subs(rests)
        rat = [_rationalize(e, self.subs) for e in rests]
        params = set().union(*(e.free_symbols for e in rat)) - set(self.gens)
        radicals = {p for e in rat for p in e.atoms(sp.Pow) if p.exp.is_Rational and not p.exp.is_Integer}
        for r in radicals:
            params -= r.free_symbols
        field_gens = sorted(params, key=str) + sorted(radicals, key=sp.default_sort_key)
        self.ring = ring(list(self.gens), sp.QQ.frac_field(*field_gens) if field_gens else sp.QQ)[0]

    def __call__(self, expr: sp.Expr) -> LogPoly:
        weights, rest = _split_logs(expr)
        return LogPoly(self.ring, self.poly(rest), weights)

    def poly(self, expr: sp.Expr):
        """A log-free expression as a ring element (e.g. a moment)."""
        return self.ring.from_expr(_rationalize(expr, self.subs)) if expr != 0 else self.ring.zero

    def expr(self, lp: LogPoly) -> sp.Expr:
        """A :class:`LogPoly` back to a SymPy expression (π and the square-rooted symbols restored)."""
        back = {_PI: sp.pi, **{p.base: s ** sp.Rational(1, p.exp) for s, p in self.subs.items()}}
        poly = self.ring.to_sympy(lp.poly) if hasattr(self.ring, "to_sympy") else lp.poly.as_expr()
        return (poly + sum(w * sp.log(a) for a, w in lp.logs.items() if w != 0)).xreplace(back)


def log_residual(diff: sp.Expr, gens: Sequence[sp.Symbol] = ()) -> str | None:
    """``None`` when ``diff`` is identically zero as a log-density expression (see :func:`log_identity`), else a
    short description of why not."""
    diff = sp.sympify(diff)
    return LogAlgebra([diff], gens)(diff).residual()


# Schedule quantities declared in (0, 1) by the derivations' assumptions (0 < β_t < 1, 0 < ᾱ_t ≤ 1, r_t = √α_t).
_UNIT_INTERVAL = re.compile(r"^(beta|alpha|alpha_bar|alpha_bar_prev|alpha_bar_t|r|beta_\d+|alpha_\d+|r_\d+)$")


@cache
def log_argument_positive(arg: sp.Expr) -> bool:
    """Whether ``arg`` is provably > 0: by SymPy's assumptions on its symbols, or -- for the schedule quantities
    declared in (0, 1) (β_t, α_t, ᾱ_t, ᾱ_{t−1}, r_t) -- after writing each as 1/(1 + k) with k > 0, which covers
    exactly the interval (0, 1)."""
    if arg.is_positive:
        return True
    unit = {
        p: 1 / (1 + sp.Dummy(positive=True)) for p in arg.free_symbols if p.is_positive and _UNIT_INTERVAL.match(p.name)
    }
    if not unit:
        return False
    return sp.factor(sp.cancel(sp.together(arg.xreplace(unit)))).is_positive is True


def log_identity(a: sp.Expr, b: sp.Expr, gens: Sequence[sp.Symbol] = (), *, description: str | None = None) -> Check:
    """Check ``a == b`` for sums of (Gaussian) log-densities: polynomials in ``gens`` over QQ(params), plus rational
    multiples of logs of positive expressions.

    The polynomial part of ``a − b`` must be the zero polynomial in QQ(params)[gens] (with no ``gens``: the zero
    rational function), and its log part ``Σ w_j log A_j`` must satisfy ``Π A_j^(k w_j) == 1`` (``k`` clears the
    denominators of the ``w_j``).  Exact and fast (no ``simplify``): the E7 chains with T = 4 take ~0.1 s.  A wrong
    coefficient or log-normaliser leaves a residual, reported in the detail.
    """
    gens = tuple(gens)
    names = ", ".join(map(str, gens))
    where = f"as polynomials in {names} over QQ(parameters)" if gens else "as rational functions"

    def fn(a, b) -> tuple[bool, str]:
        # log A is real only for A > 0 (and the product test below assumes it): every log's argument must be
        bad = [L.args[0] for e in (a, b) for L in sp.sympify(e).atoms(sp.log) if not log_argument_positive(L.args[0])]
        if bad:
            return False, f"log argument not provably > 0 under the declared assumptions: {sp.sstr(bad[0])[:200]}"
        why = log_residual(sp.sympify(a) - sp.sympify(b), gens)
        return (True, f"equal {where}; log-normalisers cancel") if why is None else (False, why)

    return Check(description or f"before - after == 0 {where}, logs compared as products", fn, (a, b))


def completes_square(quad: sp.Expr, sq: Square) -> Check:
    """Check ``quad == a (z − centre)² + const`` coefficient by coefficient without expanding the square:
    z²: a;  z: −2 a·centre;  1: a·centre² + const."""

    def fn(quad, claimed) -> tuple[bool, str]:
        c = coefficients(quad, sq.z)
        if set(c) - {0, 1, 2}:
            return False, f"not a quadratic in {sq.z}"
        if claimed != sq.expr:  # not the square as computed: compare the claimed expression itself
            why = log_residual(quad - claimed, [sq.z])
            return why is None, why or f"equal as polynomials in {sq.z}"
        expected = {2: sq.a, 1: -2 * sq.a * sq.centre, 0: sq.a * sq.centre**2 + sq.const}
        bad = [k for k in (2, 1, 0) if log_residual(c.get(k, 0) - expected[k]) is not None]
        if bad:
            return False, f"coefficient of {sq.z}^{bad[0]} differs"
        return True, f"coefficients of {sq.z}², {sq.z}, 1 agree with a, −2a·centre, a·centre² + const"

    return Check(f"compare coefficients in {sq.z} with the completed square", fn, (quad, sq.expr))


def tidy(expr: sp.Expr) -> sp.Expr:
    """An equal, readable form of a log-density-like expression: logs split, the rest over one denominator."""
    e = sp.expand(sp.expand_log(sp.expand(expr), force=True))
    logs, rest = [], []
    for term in sp.Add.make_args(e):
        (logs if term.has(sp.log) else rest).append(term)
    return sp.factor(sp.Add(*rest)) + sp.Add(*logs)

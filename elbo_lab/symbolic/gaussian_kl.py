"""E1 -- the Gaussian KL divergence, obtained by integrating the log-ratio against the first density.

Guide section: "The VAE route" (the ELBO's KL term).  Exports (argument order fixed):

- ``kl(mu1, var1, mu2, var2)``: KL(N(mu1, var1) ‖ N(mu2, var2)) in nats, univariate; the diagonal multivariate
  KL is the sum of these over dimensions (proved in the steps).
- ``log_density(x, mu, var)``: log N(x; mu, var) in nats.

Numeric counterpart: :func:`elbo_lab.gaussian.normal_kl`, tested in ``tests/test_gaussian.py``.
"""

from __future__ import annotations

import sympy as sp

from .algebra import expect_normal, expect_normal_direct, log_normal, normal_moment, normal_pdf
from .core import Derivation, equal, holds, integral_equals, is_zero

x = sp.Symbol("x", real=True)
mu1, mu2 = sp.symbols("mu1 mu2", real=True)
var1, var2 = sp.symbols("var1 var2", positive=True)
r = sp.Symbol("r", positive=True)


TEXTBOOK_KL = sp.Rational(1, 2) * (sp.log(var2 / var1) + (var1 + (mu1 - mu2) ** 2) / var2 - 1)


def build(*, kl=TEXTBOOK_KL) -> Derivation:
    """Build E1. ``kl`` is the claimed closed form (tests pass a wrong one and expect a ✗)."""
    d = Derivation("gaussian_kl", "E1", "Gaussian KL divergence from its integral", "The VAE route")
    p = normal_pdf(x, mu1, var1)

    d.step(
        "The first density N(mu1, var1) integrates to one",
        sp.Integer(1),
        "Gaussian integral",
        integral_equals(p, x, sp.Integer(1)),
        before=sp.Integral(p, (x, -sp.oo, sp.oo)),
    )

    ratio = log_normal(x, mu1, var1) - log_normal(x, mu2, var2)
    log_ratio_poly = sp.collect(sp.expand(ratio), x)
    d.step(
        "The log-ratio log p(x) - log q(x) is a quadratic polynomial in x",
        log_ratio_poly,
        "expand the squares; the log-normalisers are constants in x",
        equal(sp.log(normal_pdf(x, mu1, var1) / normal_pdf(x, mu2, var2)), log_ratio_poly, method="expand_log"),
        before=sp.log(sp.Function("p")(x) / sp.Function("q")(x)),
    )

    # The KL *is* the integral of the log-ratio against p; SymPy evaluates it (not typed in), after the change
    # of variables x = mu1 + sqrt(var1) u that turns p into the standard normal density: the log-ratio is a
    # quadratic, so the integral is c0 + c1 E[u] + c2 E[u²] with each ∫ u^k N(u; 0, 1) du integrated by SymPy.
    kl_integral = sp.Integral(p * log_ratio_poly, (x, -sp.oo, sp.oo))
    kl_derived = sp.expand(sp.expand_log(expect_normal(log_ratio_poly, x, mu1, var1), force=True))

    def moments_route() -> tuple[bool, str]:
        # Independent route: the log-ratio is c0 + c1 x + c2 x^2, so KL = c0 + c1 E[x] + c2 E[x^2] with the
        # moments of N(mu1, var1) integrated directly in x (no substitution).
        route = expect_normal_direct(log_ratio_poly, x, mu1, var1)
        residual = sp.expand(sp.expand_log(route - kl_derived, force=True))
        m1, m2 = normal_moment(1, mu1, var1), normal_moment(2, mu1, var1)
        return residual == 0, f"E[x] = {m1}, E[x^2] = {m2}; residual = {residual}"

    d.step(
        "KL(p ‖ q) = ∫ p(x) log(p(x)/q(x)) dx, evaluated by SymPy (substituting x = mu1 + sqrt(var1) u)",
        kl_derived,
        "integrate the quadratic log-ratio against N(mu1, var1)",
        holds(moments_route, "the same integral by the moment route c0 + c1 E[x] + c2 E[x^2]"),
        before=kl_integral,
    )
    d.step(
        "The integral equals the textbook closed form",
        kl,
        "collect the moments E[x] = mu1, E[x^2] = var1 + mu1^2",
        equal(kl_derived, kl, method="expand_log"),
        before=kl_derived,
    )

    # Diagonal case: log-ratio of products is the sum of log-ratios, and each term only sees its own coordinate.
    xs = sp.symbols("x_1:4", real=True)
    ms1, ms2 = sp.symbols("m_1:4", real=True), sp.symbols("n_1:4", real=True)
    vs1, vs2 = sp.symbols("u_1:4", positive=True), sp.symbols("w_1:4", positive=True)
    joint_ratio = sp.log(
        sp.Mul(*[normal_pdf(xi, a, b) for xi, a, b in zip(xs, ms1, vs1)])
        / sp.Mul(*[normal_pdf(xi, a, b) for xi, a, b in zip(xs, ms2, vs2)])
    )
    sum_ratio = sum(log_normal(xi, a, b) - log_normal(xi, c, e) for xi, a, b, c, e in zip(xs, ms1, vs1, ms2, vs2))
    d.step(
        "Diagonal Gaussians (D = 3): the log-ratio of the products is the sum of the per-dimension log-ratios",
        sum_ratio,
        "log of a product is the sum of logs",
        equal(joint_ratio, sum_ratio, method="expand_log"),
        before=joint_ratio,
    )
    kl_diag = sum(kl_derived.subs({mu1: a, var1: b, mu2: c, var2: e}) for a, b, c, e in zip(ms1, vs1, ms2, vs2))

    def marginalises() -> tuple[bool, str]:
        # E_{p1 p2 p3}[f(x_1)] = E_{p1}[f(x_1)] because the other factors integrate to one.
        # ∫ N(x_j; m_j, u_j) dx_j is the zeroth moment of N(m_j, u_j), integrated by SymPy for a generic Gaussian.
        others = [normal_moment(0, a, b) for a, b in zip(ms1, vs1)]
        return all(o == 1 for o in others), "each other factor integrates to 1, so each term's expectation is 1-D"

    d.step(
        "so the diagonal KL is the sum of univariate KLs",
        kl_diag,
        "linearity of expectation; the other coordinates integrate out",
        holds(marginalises, "∫ N(x_j; m_j, u_j) dx_j = 1 for every j"),
        before=sp.Symbol(r"\mathrm{KL}_{\mathrm{diag}}"),
    )

    # KL >= 0 with equality iff the parameters agree.
    g = r - 1 - sp.log(r)
    kl_split = sp.Rational(1, 2) * g.subs(r, var1 / var2) + (mu1 - mu2) ** 2 / (2 * var2)
    d.step(
        "Split: KL = ½ g(var1/var2) + (mu1 - mu2)²/(2 var2) with g(r) = r - 1 - log r",
        kl_split,
        "regroup the closed form",
        equal(kl_derived, kl_split, method="expand_log"),
        before=kl_derived,
    )

    def g_nonnegative() -> tuple[bool, str]:
        crit = sp.solve(sp.diff(g, r), r)
        convex = sp.simplify(sp.diff(g, r, 2)).is_positive
        return (
            crit == [1] and g.subs(r, 1) == 0 and convex is True
        ), f"g'(r) = 0 only at r = {crit}; g(1) = 0; g'' = 1/r² > 0"

    d.step(
        "g(r) ≥ 0 with equality only at r = 1 (g is strictly convex with its minimum 0 at r = 1)",
        sp.Ge(g, 0),
        "g'(r) = 1 - 1/r vanishes only at r = 1, g''(r) = 1/r² > 0",
        holds(g_nonnegative, "critical points, value and convexity of g"),
    )
    d.step(
        "Hence KL ≥ 0, and KL = 0 exactly when mu1 = mu2 and var1 = var2",
        sp.Ge(kl_split, 0),
        "both summands are non-negative; the first vanishes iff var1 = var2, the second iff mu1 = mu2",
        is_zero(kl_split.subs({mu2: mu1, var2: var1}), description="KL at equal parameters == 0"),
    )

    d.export("kl", kl_derived, (mu1, var1, mu2, var2), "KL(N(mu1, var1) ‖ N(mu2, var2)), nats")
    d.export("log_density", log_normal(x, mu1, var1), (x, mu1, var1), "log N(x; mu1, var1), nats")
    return d

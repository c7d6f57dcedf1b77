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
from .core import Derivation, Part, convex_minimum, equal, holds, integral_equals, nonnegative_parts

x = sp.Symbol("x", real=True)
mu1, mu2 = sp.symbols("mu1 mu2", real=True)
var1, var2 = sp.symbols("var1 var2", positive=True)
r = sp.Symbol("r", positive=True)


TEXTBOOK_KL = sp.Rational(1, 2) * (sp.log(var2 / var1) + (var1 + (mu1 - mu2) ** 2) / var2 - 1)


def build(*, kl=TEXTBOOK_KL, kl_diag=None, gibbs_relation=sp.Ge) -> Derivation:
    """Build E1. ``kl`` is the claimed closed form, ``kl_diag`` the claimed diagonal KL (D = 3; default: the sum of
    the univariate KLs), ``gibbs_relation`` the claimed relation of KL to 0 (``sp.Ge``).  Tests pass wrong ones and
    expect a ✗."""
    d = Derivation("gaussian_kl", "E1", "Gaussian KL divergence from its integral", "The VAE route")
    d.assume("var1 > 0, var2 > 0 (variances); mu1, mu2, x real")
    p = normal_pdf(x, mu1, var1)

    log_p = log_normal(x, mu1, var1)
    d.step(
        "Definition: log N(x; mu1, var1) = −½ log(2π var1) − (x − mu1)²/(2 var1), a normalised density",
        log_p,
        "the Gaussian density; its exponential integrates to one",
        holds(
            lambda lp: (sp.simplify(sp.integrate(sp.exp(lp), (x, -sp.oo, sp.oo)) - 1) == 0, "∫ exp(log N) dx = 1"),
            "exp of the log-density integrates to 1",
            log_p,
        ),
        before=sp.log(sp.Function("N")(x)),
    )

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

    def moments_route(claimed) -> tuple[bool, str]:
        # Independent route: the log-ratio is c0 + c1 x + c2 x^2, so KL = c0 + c1 E[x] + c2 E[x^2] with the
        # moments of N(mu1, var1) integrated directly in x (no substitution).
        route = expect_normal_direct(log_ratio_poly, x, mu1, var1)
        residual = sp.expand(sp.expand_log(route - claimed, force=True))
        m1, m2 = normal_moment(1, mu1, var1), normal_moment(2, mu1, var1)
        return residual == 0, f"E[x] = {m1}, E[x^2] = {m2}; residual = {residual}"

    d.step(
        "KL(p ‖ q) = ∫ p(x) log(p(x)/q(x)) dx, evaluated by SymPy (substituting x = mu1 + sqrt(var1) u)",
        kl_derived,
        "integrate the quadratic log-ratio against N(mu1, var1)",
        holds(moments_route, "the same integral by the moment route c0 + c1 E[x] + c2 E[x^2]", kl_derived),
        before=kl_integral,
        kind="computed",
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
        "Diagonal Gaussians: the log-ratio of the products is the sum of the per-dimension log-ratios",
        sum_ratio,
        "log of a product is the sum of logs",
        equal(joint_ratio, sum_ratio, method="expand_log"),
        before=joint_ratio,
        scope="D = 3",
    )
    if kl_diag is None:
        kl_diag = sum(kl_derived.subs({mu1: a, var1: b, mu2: c, var2: e}) for a, b, c, e in zip(ms1, vs1, ms2, vs2))

    def marginalises(claimed) -> tuple[bool, str]:
        # E_{p1 p2 p3}[Σ_i f_i(x_i)] = Σ_i E_{p_i}[f_i(x_i)] · Π_{j≠i} ∫ N(x_j; m_j, u_j) dx_j: each term integrated
        # against its own coordinate's density, the other factors integrated (zeroth moments, by SymPy).
        zeroth = [normal_moment(0, a, b) for a, b in zip(ms1, vs1)]
        total = 0
        for i, (xi, a, b, c, e) in enumerate(zip(xs, ms1, vs1, ms2, vs2)):
            term = log_normal(xi, a, b) - log_normal(xi, c, e)
            others = sp.Mul(*[zeroth[j] for j in range(3) if j != i])
            total += others * expect_normal(sp.expand(term), xi, a, b)
        residual = sp.simplify(sp.expand_log(sp.expand(total - claimed), force=True))
        return residual == 0, f"∫ N(x_j) dx_j = {zeroth}; residual = {residual}"

    d.step(
        "so the diagonal KL is the sum of univariate KLs",
        kl_diag,
        "linearity of expectation; the other coordinates integrate out",
        holds(marginalises, "each term integrated against its coordinate, the others integrate to 1", kl_diag),
        before=sp.Symbol(r"\mathrm{KL}_{\mathrm{diag}}"),
        scope="D = 3",
    )

    # Lemma L1: log r ≤ r − 1, equality only at r = 1 -> Gibbs' inequality KL ≥ 0 (univariate, diagonal for any D).
    lemma = sp.Le(sp.log(r), r - 1)
    d.step(
        "Lemma L1: log r ≤ r − 1 for r > 0, with equality only at r = 1",
        lemma,
        "g(r) = r − 1 − log r has g'' = 1/r² > 0 and its only stationary point at r = 1, where g = 0",
        convex_minimum(lemma, r),
    )
    g = r - 1 - sp.log(r)
    kl_split = sp.Rational(1, 2) * g.subs(r, var1 / var2) + (mu1 - mu2) ** 2 / (2 * var2)
    d.step(
        "Split: KL = ½ g(var1/var2) + (mu1 - mu2)²/(2 var2) with g(r) = r - 1 - log r",
        kl_split,
        "regroup the closed form",
        equal(kl_derived, kl_split, method="expand_log"),
        before=kl_derived,
    )
    gibbs_parts = [
        Part(sp.Rational(1, 2) * g.subs(r, var1 / var2), lemma, ((r, var1 / var2),), "L1 at r = var1/var2"),
        Part((mu1 - mu2) ** 2 / (2 * var2), name="a square over 2 var2 > 0"),
    ]

    def gibbs(rel) -> tuple[bool, str]:
        ok, detail = nonnegative_parts(rel, gibbs_parts).run()
        if not ok:
            return ok, detail
        # equality: both parts are ≥ 0, so KL = 0 forces each to 0; L1's equality case r = 1 gives var1 = var2
        eq1 = sp.solve(sp.Eq(var1 / var2, 1), var1)
        eq2 = sp.solve(gibbs_parts[1].expr, mu1)
        return eq1 == [var2] and eq2 == [mu2], f"{detail}; equality iff var1 = {eq1}, mu1 = {eq2}"

    gibbs_rel = gibbs_relation(kl_split, 0)
    d.step(
        "Gibbs' inequality: KL ≥ 0, and KL = 0 exactly when mu1 = mu2 and var1 = var2",
        gibbs_rel,
        "both parts are non-negative (L1; a square); the first vanishes iff var1 = var2, the second iff mu1 = mu2",
        holds(gibbs, "KL as a sum of non-negative parts (L1, a square); equality case solved", gibbs_rel),
    )
    i, D = sp.symbols("i D", integer=True, positive=True)
    M1, M2 = sp.IndexedBase("mu_1", real=True), sp.IndexedBase("mu_2", real=True)
    V1, V2 = sp.IndexedBase("sigma2_1", positive=True), sp.IndexedBase("sigma2_2", positive=True)
    kl_i = kl_split.xreplace({mu1: M1[i], mu2: M2[i], var1: V1[i], var2: V2[i]})
    diag_rel = sp.Ge(sp.Sum(kl_i, (i, 1, D)), 0)
    gibbs_lemma = sp.Ge(kl_split, 0)  # the lemma as proven by the previous step (when its claim is the textbook one)
    gibbs_i = tuple(zip((mu1, var1, mu2, var2), (M1[i], V1[i], M2[i], V2[i])))
    d.step(
        "Diagonal Gaussians, any dimension D: KL = Σ_i KL_i ≥ 0 (Gibbs for each coordinate)",
        diag_rel,
        "each summand is a univariate KL, ≥ 0 by the previous step; equality iff every coordinate's parameters agree",
        nonnegative_parts(diag_rel, [Part(sp.Sum(kl_i, (i, 1, D)), gibbs_lemma, gibbs_i, "Gibbs per coordinate")]),
    )

    d.export("kl", kl_derived, (mu1, var1, mu2, var2), "KL(N(mu1, var1) ‖ N(mu2, var2)), nats")
    d.export("log_density", log_p, (x, mu1, var1), "log N(x; mu1, var1), nats")
    return d

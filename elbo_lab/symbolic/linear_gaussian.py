"""E4 -- the linear-Gaussian VAE (probabilistic PCA): exact log p(x), exact posterior, and the ELBO gap.

Guide section: "The VAE route".  Model: p(z) = N(0, 1) (scalar latent), p(x|z) = N(W z + b, sigma2 I) with
x in R^D.  Derived by SymPy for D = 1 and D = 2 (W a D×1 column of symbols) by completing the square in z:

- the marginal p(x) = N(b, W Wᵀ + sigma2 I)  (its log-density computed from the matrix with SymPy's det/inv),
- the posterior p(z|x) = N(M⁻¹ Wᵀ (x − b), sigma2 M⁻¹) with M = WᵀW + sigma2 (Bishop's PPCA form; the same as
  precision 1 + WᵀW/sigma2 and mean Wᵀ(x − b)/(sigma2 + WᵀW)),
- for an encoder q(z|x) = N(m, v): ELBO(m, v) integrated against q, and the gap log p(x) − ELBO(m, v), which is
  KL(q ‖ p(z|x)) (E1), convex in (m, v), with its only stationary point -- found by ``solve`` -- at the exact
  posterior, where it is zero.

Exports (argument order fixed; nats):

- ``log_marginal(x, w, b, sigma2)``: exact log p(x) (scalar x).
- ``posterior_mean(x, w, b, sigma2)``, ``posterior_variance(w, sigma2)``: p(z|x) (scalar x).
- ``elbo(x, w, b, sigma2, m, v)``: an ELBO (≤ log p(x));  ``gap(x, w, b, sigma2, m, v)`` = log p(x) − ELBO ≥ 0.
- ``log_marginal_2d(x1, x2, w1, w2, b1, b2, sigma2)``, ``posterior_mean_2d(x1, x2, w1, w2, b1, b2, sigma2)``,
  ``posterior_variance_2d(w1, w2, sigma2)``, ``elbo_2d(x1, x2, w1, w2, b1, b2, sigma2, m, v)``,
  ``gap_2d(x1, x2, w1, w2, b1, b2, sigma2, m, v)``: the same for 2-D x.

Numeric counterpart: the probabilistic-PCA oracle, tested against these callables.
Tests: ``tests/test_symbolic_vae.py`` (quadrature, ``scipy.stats.multivariate_normal``, Monte Carlo, wrong claims).
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from .algebra import (
    Square,
    coefficients,
    complete_square,
    completes_square,
    expect_normal,
    expect_normal_direct,
    gaussian_integral_step,
    log_identity,
    log_integral_exp_quadratic,
    log_mvn,
    log_normal,
    log_residual,
    tidy,
)
from .core import Derivation, holds

z, m = sp.symbols("z m", real=True)
v, sigma2 = sp.symbols("v sigma2", positive=True)
x, w, b = sp.symbols("x w b", real=True)
x1, x2, w1, w2, b1, b2 = sp.symbols("x1 x2 w1 w2 b1 b2", real=True)

W2 = sp.Matrix([w1, w2])  # (2, 1)
X2 = sp.Matrix([x1, x2])
B2 = sp.Matrix([b1, b2])

TEXTBOOK_MARGINAL_VARIANCE = w**2 + sigma2
TEXTBOOK_POSTERIOR_VARIANCE = 1 / (1 + w**2 / sigma2)
TEXTBOOK_POSTERIOR_MEAN = (w * (x - b) / sigma2) / (1 + w**2 / sigma2)
TEXTBOOK_MARGINAL_COV_2D = W2 * W2.T + sigma2 * sp.eye(2)
_M2 = (W2.T * W2)[0, 0] + sigma2  # Bishop's M = WᵀW + sigma2 (1×1 for a scalar latent)
TEXTBOOK_POSTERIOR_MEAN_2D = (W2.T * (X2 - B2))[0, 0] / _M2
TEXTBOOK_POSTERIOR_VARIANCE_2D = sigma2 / _M2


@dataclass
class _Model:
    """Derived quantities of the model with x = xs (a list of D symbols)."""

    joint: sp.Expr  # log p(x, z)
    square: Square  # log p(x, z) = a (z − centre)² + const
    log_px: sp.Expr
    post_mean: sp.Expr
    post_var: sp.Expr
    xs: list
    ws: list
    bs: list


def _derive(xs, ws, bs) -> _Model:
    joint = sp.expand(sum(log_normal(xi, wi * z + bi, sigma2) for xi, wi, bi in zip(xs, ws, bs)) + log_normal(z, 0, 1))
    sq = complete_square(joint, z)
    log_px = tidy(log_integral_exp_quadratic(sq))
    return _Model(joint, sq, log_px, sq.centre, sq.variance, xs, ws, bs)


def _model_steps(d: Derivation, label: str, mdl: _Model, log_marginal_claim, mean_claim, var_claim) -> None:
    def concave(joint) -> tuple[bool, str]:
        terms = [log_normal(xi, wi * z + bi, sigma2) for xi, wi, bi in zip(mdl.xs, mdl.ws, mdl.bs)]
        why = log_residual(joint - sum(terms) - log_normal(z, 0, 1), [z])
        lead = sp.factor(coefficients(joint, z).get(2, 0))
        return why is None and lead.is_negative is True, f"{why or 'the sum expanded'}; z² coefficient {lead} < 0"

    d.step(
        f"({label}) log p(x, z) = Σ_i log N(x_i; w_i z + b_i, sigma2) + log N(z; 0, 1) is a concave quadratic in z",
        mdl.joint,
        "expand the Gaussian log-densities",
        holds(concave, "the sum of log-densities expanded; leading coefficient in z is negative", mdl.joint),
        before=sp.Symbol("log p(x,z)"),
        scope=label,
    )
    d.step(
        f"({label}) Complete the square in z",
        mdl.square.expr,
        "a z² + c z + k0 = a (z + c/(2a))² + k0 − c²/(4a)",
        completes_square(mdl.joint, mdl.square),
        before=mdl.joint,
        scope=label,
    )
    d.step(
        f"({label}) log p(x) = log ∫ p(x, z) dz is the Gaussian log-density of the textbook marginal",
        log_marginal_claim,
        "shift z by the square's centre; ∫ exp(−A y²) dy = √(π/A) with A = −a",
        log_identity(mdl.log_px, log_marginal_claim),
        before=mdl.log_px,
        scope=label,
    )
    post = sp.Tuple(mdl.post_mean, mdl.post_var)
    d.step(
        f"({label}) Bayes: log p(z|x) = log p(x, z) − log p(x) = log N(z; centre, −1/(2a))",
        post,
        "the exponent's square is the posterior's; the constants are those of p(x)",
        holds(
            lambda mv: log_identity(mdl.square.expr - mdl.log_px, log_normal(z, mv[0], mv[1]), [z]).run(),
            "log p(x, z) − log p(x) against log N(z; mean, variance) as polynomials in z",
            post,
        ),
        before=mdl.square.expr - sp.Symbol("log p(x)"),
        scope=label,
        kind="computed",
    )

    def textbook_posterior(claim) -> tuple[bool, str]:
        rm, rv = sp.cancel(mdl.post_mean - claim[0]), sp.cancel(mdl.post_var - claim[1])
        return rm == 0 and rv == 0, f"mean residual {rm}; variance residual {rv}"

    claimed = sp.Tuple(mean_claim, var_claim)
    d.step(
        f"({label}) The posterior is the textbook one",
        claimed,
        "read off centre and variance; rational-function identity",
        holds(textbook_posterior, "cancel(derived - claimed) == 0 for mean and variance", claimed),
        before=sp.Tuple(mdl.post_mean, mdl.post_var),
        scope=label,
    )


def _gap_steps(d, label, mdl: _Model, kl) -> tuple[sp.Expr, sp.Expr]:
    """ELBO(m, v) by integration; gap = log p(x) − ELBO = KL(q ‖ posterior) (``kl``: E1's result); its minimiser.
    Returns (elbo, gap)."""
    elbo = tidy(expect_normal(mdl.joint - log_normal(z, m, v), z, m, v))
    direct = expect_normal_direct(mdl.joint - log_normal(z, m, v), z, m, v)
    d.step(
        f"({label}) ELBO(m, v) = ∫ N(z; m, v) [log p(x, z) − log N(z; m, v)] dz, integrated by SymPy",
        elbo,
        "integrate the quadratic against q (z = m + √v u, E2)",
        holds(lambda e: log_identity(e, direct).run(), "the moments of q integrated directly in z", elbo),
        before=sp.Integral(sp.Symbol("q(z)") * sp.Symbol("log p(x,z)/q(z)"), (z, -sp.oo, sp.oo)),
        scope=label,
        kind="computed",
    )
    gap_kl = kl.at(m, v, mdl.post_mean, mdl.post_var)
    d.step(
        f"({label}) ELBO(m, v) = ∫ N(z; m, v) [log p(x, z) − log N(z; m, v)] dz, and log p(x) − ELBO = "
        "KL(q ‖ p(z|x)) from E1",
        gap_kl,
        "integrate the quadratic against q (z = m + √v u, E2); the KL is E1's result at the exact posterior",
        log_identity(mdl.log_px - elbo, gap_kl),
        before=mdl.log_px - elbo,
        scope=label,
    )
    gap = mdl.log_px - elbo  # the gap as derived (log p minus the integrated ELBO)
    grad = [sp.diff(gap, m), sp.diff(gap, v)]

    def unique_stationary_point(claim) -> tuple[bool, str]:
        sols = sp.solve(grad, [m, v], dict=True)
        ok = len(sols) == 1 and all(
            isinstance(c, sp.Equality) and c.lhs in sols[0] and sp.cancel(sols[0][c.lhs] - c.rhs) == 0 for c in claim
        )
        return ok and len(claim) == 2, f"solutions {sols}"

    stationary = sp.Tuple(sp.Eq(m, mdl.post_mean), sp.Eq(v, mdl.post_var))
    d.step(
        f"({label}) ∇_(m, v) gap = 0 has exactly one solution: the exact posterior's mean and variance",
        stationary,
        "solve the two gradient equations",
        holds(unique_stationary_point, "sp.solve(∇gap, [m, v])", stationary),
        before=sp.Tuple(*[sp.Eq(g, 0) for g in grad]),
        scope=label,
        kind="computed",
    )
    hessian = sp.hessian(gap, (m, v))

    def convex(claim) -> tuple[bool, str]:
        h = claim.applyfunc(sp.cancel)
        same = (h - sp.hessian(gap, (m, v))).applyfunc(sp.cancel) == sp.zeros(2, 2)
        ok = same and h[0, 1] == 0 and h[1, 0] == 0 and h[0, 0].is_positive is True and h[1, 1].is_positive is True
        return ok, f"Hessian = {sp.sstr(h)} (recomputed: {same})"

    d.step(
        f"({label}) The gap is strictly convex in (m, v) for v > 0 (diagonal Hessian, positive entries), "
        "so that point is its global minimum",
        hessian,
        "second derivatives of the gap",
        holds(convex, "Hessian recomputed; diagonal with positive diagonal for all m, v > 0", hessian),
        before=sp.Symbol("Hessian(gap)"),
        scope=label,
        kind="computed",
    )
    at_min = gap.subs({m: mdl.post_mean, v: mdl.post_var})
    zero = sp.Integer(0)
    d.step(
        f"({label}) At the minimum the gap is 0: ELBO = log p(x) exactly at the true posterior (gap ≥ 0 elsewhere)",
        zero,
        "substitute m, v = posterior mean, variance",
        holds(lambda c: log_identity(at_min, c).run(), "the gap at the posterior, compared", zero),
        before=sp.Symbol("gap(posterior)"),
        scope=label,
    )
    return elbo, gap_kl


def build(
    *,
    marginal_variance=TEXTBOOK_MARGINAL_VARIANCE,
    posterior_mean=TEXTBOOK_POSTERIOR_MEAN,
    posterior_variance=TEXTBOOK_POSTERIOR_VARIANCE,
    marginal_cov_2d=TEXTBOOK_MARGINAL_COV_2D,
    posterior_mean_2d=TEXTBOOK_POSTERIOR_MEAN_2D,
    posterior_variance_2d=TEXTBOOK_POSTERIOR_VARIANCE_2D,
) -> Derivation:
    """Build E4.  Every keyword is a claimed (textbook) expression; tests pass wrong ones and expect a ✗."""
    from . import get

    d = Derivation("linear_gaussian", "E4", "Linear-Gaussian VAE: exact log p(x), posterior, ELBO gap", "The VAE route")
    d.assume("p(z) = N(0, 1), p(x_i|z) = N(w_i z + b_i, sigma2), sigma2 > 0; q(z|x) = N(m, v), v > 0")
    gaussian_integral_step(d)
    kl_result = get("gaussian_kl").result("kl")

    one = _derive([x], [w], [b])
    _model_steps(d, "D = 1", one, log_normal(x, b, marginal_variance), posterior_mean, posterior_variance)
    elbo1, gap1 = _gap_steps(d, "D = 1", one, kl_result)

    two = _derive([x1, x2], [w1, w2], [b1, b2])
    _model_steps(d, "D = 2", two, log_mvn(X2, B2, marginal_cov_2d), posterior_mean_2d, posterior_variance_2d)
    elbo2 = tidy(expect_normal(two.joint - log_normal(z, m, v), z, m, v))
    gap2 = kl_result.at(m, v, two.post_mean, two.post_var)
    d.step(
        "(D = 2) log p(x) − ELBO(m, v) = KL(q ‖ p(z|x)) from E1, zero at the exact posterior",
        gap2,
        "ELBO integrated against q as for D = 1",
        log_identity(two.log_px - elbo2, gap2),
        before=two.log_px - elbo2,
        scope="D = 2",
    )
    direct2 = expect_normal_direct(two.joint - log_normal(z, m, v), z, m, v)
    d.step(
        "(D = 2) ELBO(m, v) integrated by SymPy",
        elbo2,
        "integrate the quadratic against q",
        holds(lambda e: log_identity(e, direct2).run(), "the moments of q integrated directly in z", elbo2),
        before=sp.Integral(sp.Symbol("q(z)") * sp.Symbol("log p(x,z)/q(z)"), (z, -sp.oo, sp.oo)),
        scope="D = 2",
        kind="computed",
    )

    args1 = (x, w, b, sigma2)
    d.export("log_marginal", log_normal(x, b, marginal_variance), args1, "exact log p(x), nats (scalar x)")
    d.export("posterior_mean", one.post_mean, args1, "mean of p(z|x)")
    d.export("posterior_variance", one.post_var, (w, sigma2), "variance of p(z|x)")
    d.export("elbo", elbo1, (*args1, m, v), "ELBO with q(z|x) = N(m, v), nats (≤ log p(x))")
    d.export("gap", gap1, (*args1, m, v), "log p(x) − ELBO = KL(q ‖ p(z|x)), nats (≥ 0)")
    args2 = (x1, x2, w1, w2, b1, b2, sigma2)
    d.export("log_marginal_2d", log_mvn(X2, B2, marginal_cov_2d), args2, "exact log p(x), nats (2-D x)")
    d.export("posterior_mean_2d", two.post_mean, args2, "mean of p(z|x) (2-D x)")
    d.export("posterior_variance_2d", two.post_var, (w1, w2, sigma2), "variance of p(z|x) (2-D x)")
    d.export("elbo_2d", elbo2, (*args2, m, v), "ELBO with q(z|x) = N(m, v), nats (2-D x)")
    d.export("gap_2d", gap2, (*args2, m, v), "KL(q ‖ p(z|x)), nats (2-D x)")
    return d

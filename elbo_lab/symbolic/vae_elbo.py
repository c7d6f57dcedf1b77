"""E3 -- log p(x) = ELBO + KL(q(z|x) ‖ p(z|x)) and ELBO = E_q[log p(x|z)] − KL(q(z|x) ‖ p(z)).

Guide section: "The VAE route".  The two identities are first proved pointwise in z, as identities of
log-density ratios (Bayes: p(z|x) = p(x, z)/p(x); the factorisation p(x, z) = p(x|z) p(z)), then taken in
expectation under q (∫ q = 1).  They are then verified by integration on a conjugate model:
p(z) = N(0, 1), p(x|z) = N(w z + b, s2), q(z|x) = N(m, v) (scalar x and z), where the ELBO is integrated,
log p(x) and the posterior are exact (completing the square), and both KLs come from E1 ``gaussian_kl``.

Exports (argument order fixed; nats):

- ``elbo(x, w, b, s2, m, v)``: E_q[log p(x, z) − log q(z|x)], an ELBO (≤ log p(x)).
- ``log_marginal(x, w, b, s2)``: exact log p(x).
- ``gap(x, w, b, s2, m, v)``: KL(q(z|x) ‖ p(z|x)) = log p(x) − ELBO ≥ 0.
- ``reconstruction(x, w, b, s2, m, v)``: E_q[log p(x|z)];  ``kl_prior(m, v)``: KL(q(z|x) ‖ p(z)).
- ``posterior_mean(x, w, b, s2)``, ``posterior_variance(w, s2)``: the exact p(z|x) = N(mean, variance).

Claims are SymPy expressions in the placeholder symbols below (``ELBO``, ``GAP``, ``RECON``, ``KL_PRIOR``) so a
test can flip a sign (``elbo=RECON + KL_PRIOR``) and see the pointwise *and* the concrete steps fail.
Numeric counterparts: the VAE estimators (ELBO with analytic KL), tested against these callables.
Tests: ``tests/test_symbolic_vae.py`` (quadrature, Monte Carlo, wrong claims).
"""

from __future__ import annotations

import sympy as sp

from .algebra import (
    coefficients,
    complete_square,
    completes_square,
    expect_normal,
    expect_normal_direct,
    gaussian_integral_step,
    log_identity,
    log_integral_exp_quadratic,
    log_normal,
    normal_pdf,
    tidy,
)
from .core import Derivation, holds, integral_equals

x, w, b, m, z = sp.symbols("x w b m z", real=True)
s2, v = sp.symbols("s2 v", positive=True)

# Placeholders of the claimed identities.
ELBO, GAP, RECON, KL_PRIOR = (sp.Symbol(n, real=True) for n in ("ELBO", "KL_post", "E_q[log p(x|z)]", "KL_prior"))
LOG_PX, LOG_PXZ = sp.Symbol("log p(x)"), sp.Symbol("log p(x,z)")  # display only
# Positive symbols standing for density values at one (x, z), for the pointwise identities.
P_X, P_XZ, P_XGZ, P_Z, Q = (sp.Symbol(n, positive=True) for n in ("p(x)", "p(x,z)", "p(x|z)", "p(z)", "q(z|x)"))


def build(*, log_marginal=ELBO + GAP, elbo=RECON - KL_PRIOR, marginal_variance=w**2 + s2) -> Derivation:
    """Build E3.  ``log_marginal`` (in ELBO, GAP) and ``elbo`` (in RECON, KL_PRIOR) are the claimed identities;
    ``marginal_variance`` the claimed Var[x] of the conjugate model.  Tests pass wrong ones and expect a ✗."""
    from . import get

    d = Derivation(
        "vae_elbo", "E3", "log p(x) = ELBO + KL(q ‖ p(z|x)); ELBO = E_q log p(x|z) − KL(q ‖ p(z))", "The VAE route"
    )

    # ---- pointwise identities of log-density ratios --------------------------------------------------------
    posterior = P_XZ / P_X  # Bayes: p(z|x) = p(x, z) / p(x)
    pointwise_1 = log_marginal.subs({ELBO: sp.log(P_XZ / Q), GAP: sp.log(Q / posterior)})
    d.step(
        "For every z: log p(x) = log[p(x,z)/q(z|x)] + log[q(z|x)/p(z|x)]",
        pointwise_1,
        "Bayes: p(z|x) = p(x,z)/p(x); the q's cancel",
        log_identity(sp.log(P_X), pointwise_1),
        before=sp.log(P_X),
    )
    pointwise_2 = elbo.subs({RECON: sp.log(P_XGZ), KL_PRIOR: sp.log(Q / P_Z)})
    d.step(
        "For every z: log[p(x,z)/q(z|x)] = log p(x|z) − log[q(z|x)/p(z)]",
        pointwise_2,
        "the model factorises: p(x,z) = p(x|z) p(z)",
        log_identity(sp.log(P_XGZ * P_Z / Q), pointwise_2),
        before=sp.log(P_XGZ * P_Z / Q),
    )
    c = sp.Symbol("c", real=True)
    q_density = normal_pdf(z, m, v)
    d.step(
        "Take E_q of both sides: a constant in z keeps its value because ∫ q(z|x) dz = 1, so "
        "log p(x) = ELBO + KL(q ‖ p(z|x)) and ELBO = E_q[log p(x|z)] − KL(q ‖ p(z))",
        c,
        "linearity of the integral; q(z|x) = N(z; m, v) is normalised",
        integral_equals(q_density * c, z, c),
        before=sp.Integral(q_density * c, (z, -sp.oo, sp.oo)),
    )

    # ---- the conjugate model -------------------------------------------------------------------------------
    log_lik = log_normal(x, w * z + b, s2)
    log_prior = log_normal(z, 0, 1)
    log_q = log_normal(z, m, v)
    joint = sp.expand(log_lik + log_prior)

    def quadratic_concave() -> tuple[bool, str]:
        coeffs = coefficients(joint, z)
        degree, lead = max(coeffs), sp.factor(coeffs[max(coeffs)])
        return degree == 2 and lead.is_negative is True, f"degree {degree}, z² coefficient {lead} < 0"

    d.step(
        "Conjugate model: log p(x, z) = log N(x; w z + b, s2) + log N(z; 0, 1), a concave quadratic in z",
        joint,
        "expand the two Gaussian log-densities",
        holds(quadratic_concave, "polynomial in z: degree 2 with negative leading coefficient"),
        before=LOG_PXZ,
    )

    sq = complete_square(joint, z)
    d.step(
        "Complete the square in z",
        sq.expr,
        "a z² + c z + k0 = a (z + c/(2a))² + k0 − c²/(4a)",
        completes_square(joint, sq),
        before=joint,
    )
    gaussian_integral_step(d)
    log_px = tidy(log_integral_exp_quadratic(sq))
    d.step(
        "Exact log p(x) = log ∫ p(x, z) dz: the marginal of x is N(b, w² + s2)",
        log_normal(x, b, marginal_variance),
        "shift z by the centre of the square, then the Gaussian integral with A = −a",
        log_identity(log_px, log_normal(x, b, marginal_variance)),
        before=log_px,
    )
    post_mean, post_var = sq.centre, sq.variance
    d.step(
        "Exact posterior (Bayes): log p(z|x) = log p(x, z) − log p(x) = log N(z; mean, variance)",
        log_normal(z, post_mean, post_var),
        "the square's centre is the mean, −1/(2a) the variance; the constants match p(x)",
        log_identity(sq.expr - log_px, log_normal(z, post_mean, post_var), [z]),
        before=sq.expr - LOG_PX,
    )

    # ---- the identities, by integration on the conjugate model ----------------------------------------------
    elbo_int = expect_normal(joint - log_q, z, m, v)  # integrate against q via z = m + sqrt(v) u
    d.step(
        "ELBO = ∫ q(z|x) [log p(x, z) − log q(z|x)] dz, integrated by SymPy",
        elbo_int,
        "expand into a polynomial in z; integrate each power against q (z = m + √v u, E2)",
        log_identity(elbo_int, expect_normal_direct(joint - log_q, z, m, v)),
        before=sp.Integral(q_density * (joint - log_q), (z, -sp.oo, sp.oo)),
    )
    kl = get("gaussian_kl").result("kl")  # E1
    recon = expect_normal(log_lik, z, m, v)
    kl_prior = kl.at(m, v, 0, 1)
    elbo_claimed = elbo.subs({RECON: recon, KL_PRIOR: kl_prior})
    d.step(
        "ELBO = E_q[log p(x|z)] − KL(q(z|x) ‖ p(z)), with the KL from E1",
        elbo_claimed,
        "E_q[log p(x|z)] integrated against q; KL(N(m, v) ‖ N(0, 1)) from E1",
        log_identity(elbo_int, elbo_claimed),
        before=elbo_int,
    )
    gap = kl.at(m, v, post_mean, post_var)
    d.step(
        "log p(x) = ELBO + KL(q(z|x) ‖ p(z|x)), with the KL from E1 against the exact posterior",
        log_marginal.subs({ELBO: elbo_int, GAP: gap}),
        "both sides integrated / completed by SymPy and compared",
        log_identity(log_px, log_marginal.subs({ELBO: elbo_int, GAP: gap})),
        before=log_px,
    )
    d.step(
        "Hence ELBO ≤ log p(x) (E1: KL ≥ 0), with equality when q(z|x) is the exact posterior",
        sp.Integer(0),
        "substitute m = posterior mean, v = posterior variance into log p(x) − ELBO",
        log_identity((log_px - elbo_int).subs({m: post_mean, v: post_var}), 0),
        before=LOG_PX - ELBO,
    )

    d.export("elbo", elbo_int, (x, w, b, s2, m, v), "ELBO = E_q[log p(x, z) − log q(z|x)], nats (≤ log p(x))")
    d.export("log_marginal", log_px, (x, w, b, s2), "exact log p(x), nats")
    d.export("gap", gap, (x, w, b, s2, m, v), "KL(q(z|x) ‖ p(z|x)) = log p(x) − ELBO, nats")
    d.export("reconstruction", recon, (x, w, b, s2, m, v), "E_q[log p(x|z)], nats")
    d.export("kl_prior", kl_prior, (m, v), "KL(q(z|x) ‖ p(z)), nats")
    d.export("posterior_mean", post_mean, (x, w, b, s2), "mean of p(z|x)")
    d.export("posterior_variance", post_var, (w, s2), "variance of p(z|x)")
    return d

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
    log_residual,
    normal_pdf,
    tidy,
)
from .core import Derivation, Part, holds, nonnegative_parts
from .gaussian_kl import r as r_

x, w, b, m, z = sp.symbols("x w b m z", real=True)
s2, v = sp.symbols("s2 v", positive=True)

CONJUGATE = "conjugate model p(z) = N(0, 1), p(x|z) = N(w z + b, s2), q(z|x) = N(m, v)"

# Placeholders of the claimed identities.
ELBO, GAP, RECON, KL_PRIOR = (sp.Symbol(n, real=True) for n in ("ELBO", "KL_post", "E_q[log p(x|z)]", "KL_prior"))
LOG_PX, LOG_PXZ = sp.Symbol("log p(x)"), sp.Symbol("log p(x,z)")  # display only
# Positive symbols standing for density values at one (x, z), for the pointwise identities.
P_X, P_XZ, P_XGZ, P_Z, Q = (sp.Symbol(n, positive=True) for n in ("p(x)", "p(x,z)", "p(x|z)", "p(z)", "q(z|x)"))


def build(
    *, log_marginal=ELBO + GAP, elbo=RECON - KL_PRIOR, marginal_variance=w**2 + s2, bound_relation=sp.Le
) -> Derivation:
    """Build E3.  ``log_marginal`` (in ELBO, GAP) and ``elbo`` (in RECON, KL_PRIOR) are the claimed identities;
    ``marginal_variance`` the claimed Var[x] of the conjugate model; ``bound_relation`` the claimed relation of the
    ELBO to log p(x) (``sp.Le``).  Tests pass wrong ones and expect a ✗."""
    from . import get

    d = Derivation(
        "vae_elbo", "E3", "log p(x) = ELBO + KL(q ‖ p(z|x)); ELBO = E_q log p(x|z) − KL(q ‖ p(z))", "The VAE route"
    )
    d.assume(
        "p(x), p(x, z), p(x|z), p(z), q(z|x) > 0 at the (x, z) considered (the pointwise identities take their logs)",
        "conjugate model: s2 > 0, v > 0; w, b, m, x, z real; importance weights w_i > 0, k ≥ 1",
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
    # Both sides of each pointwise identity are functions of z; integrating against q keeps an identity an identity
    # (linearity), and a side that is constant in z keeps its value (∫ q = 1, integrated by SymPy).  The claimed
    # identities in expectation are ``log_marginal`` and ``elbo`` with ELBO, KL_post, E_q[..], KL_prior the
    # expectations of the pointwise terms: the check re-derives the pointwise identity from the claim.
    expected = sp.Tuple(sp.Eq(LOG_PX, log_marginal), sp.Eq(ELBO, elbo))

    def in_expectation(claims) -> tuple[bool, str]:
        (c1, c2) = claims
        if not (isinstance(c1, sp.Equality) and isinstance(c2, sp.Equality)):
            return False, "the claims are not equations"
        if c1.lhs != LOG_PX or c2.lhs != ELBO:
            return False, "left-hand sides are not log p(x) and ELBO"
        pointwise = {
            ELBO: sp.log(P_XZ / Q),
            GAP: sp.log(Q / posterior),
            RECON: sp.log(P_XGZ),
            KL_PRIOR: sp.log(Q / P_Z),
        }
        if c1.rhs.free_symbols - {ELBO, GAP} or c2.rhs.free_symbols - {RECON, KL_PRIOR}:
            return False, "the claims hold symbols that are not expectations of the pointwise terms"
        why1 = log_residual(sp.log(P_X) - c1.rhs.xreplace(pointwise))
        why2 = log_residual(sp.log(P_XGZ * P_Z / Q) - c2.rhs.xreplace(pointwise))
        const = sp.integrate(q_density * c, (z, -sp.oo, sp.oo))  # log p(x) is constant in z: E_q keeps it
        ok = why1 is None and why2 is None and sp.simplify(const - c) == 0
        return ok, f"pointwise identities hold ({why1 or 'ok'}; {why2 or 'ok'}); ∫ q(z|x)·c dz = {const}"

    d.step(
        "Take E_q of both sides: log p(x) = ELBO + KL(q ‖ p(z|x)) and ELBO = E_q[log p(x|z)] − KL(q ‖ p(z))",
        expected,
        "linearity of the integral; log p(x) is constant in z and q(z|x) = N(z; m, v) is normalised",
        holds(in_expectation, "the claims re-derived pointwise (log identities), then ∫ q·c dz = c", expected),
    )

    # ---- the conjugate model -------------------------------------------------------------------------------
    log_lik = log_normal(x, w * z + b, s2)
    log_prior = log_normal(z, 0, 1)
    log_q = log_normal(z, m, v)
    joint = sp.expand(log_lik + log_prior)

    def quadratic_concave(joint) -> tuple[bool, str]:
        if log_residual(joint - (log_lik + log_prior), [z]) is not None:
            return False, "not the sum of the two log-densities"
        coeffs = coefficients(joint, z)
        degree, lead = max(coeffs), sp.factor(coeffs[max(coeffs)])
        return degree == 2 and lead.is_negative is True, f"degree {degree}, z² coefficient {lead} < 0"

    d.step(
        "Conjugate model: log p(x, z) = log N(x; w z + b, s2) + log N(z; 0, 1), a concave quadratic in z",
        joint,
        "expand the two Gaussian log-densities",
        holds(quadratic_concave, "the sum expanded; polynomial in z: degree 2, negative leading coefficient", joint),
        before=LOG_PXZ,
        kind="computed",
        scope=CONJUGATE,
    )

    sq = complete_square(joint, z)
    d.step(
        "Complete the square in z",
        sq.expr,
        "a z² + c z + k0 = a (z + c/(2a))² + k0 − c²/(4a)",
        completes_square(joint, sq),
        before=joint,
        kind="computed",
        scope=CONJUGATE,
    )
    gaussian_integral_step(d)
    log_px = tidy(log_integral_exp_quadratic(sq))
    d.step(
        "Exact log p(x) = log ∫ p(x, z) dz: the marginal of x is N(b, w² + s2)",
        log_normal(x, b, marginal_variance),
        "shift z by the centre of the square, then the Gaussian integral with A = −a",
        log_identity(log_px, log_normal(x, b, marginal_variance)),
        before=sp.log(sp.Integral(sp.exp(LOG_PXZ), (z, -sp.oo, sp.oo))),
        scope=CONJUGATE,
    )
    post_mean, post_var = sq.centre, sq.variance
    posterior_params = sp.Tuple(post_mean, post_var)
    d.step(
        "Exact posterior (Bayes): log p(z|x) = log p(x, z) − log p(x) = log N(z; mean, variance)",
        posterior_params,
        "the square's centre is the mean, −1/(2a) the variance; the constants match p(x)",
        holds(
            lambda mv: log_identity(sq.expr - log_px, log_normal(z, mv[0], mv[1]), [z]).run(),
            "log p(x, z) − log p(x) compared with log N(z; mean, variance) as polynomials in z",
            posterior_params,
        ),
        before=sq.expr - LOG_PX,
        kind="computed",
        scope=CONJUGATE,
    )

    # ---- the identities, by integration on the conjugate model ----------------------------------------------
    elbo_int = expect_normal(joint - log_q, z, m, v)  # integrate against q via z = m + sqrt(v) u
    direct = expect_normal_direct(joint - log_q, z, m, v)
    d.step(
        "ELBO = ∫ q(z|x) [log p(x, z) − log q(z|x)] dz, integrated by SymPy",
        elbo_int,
        "expand into a polynomial in z; integrate each power against q (z = m + √v u, E2)",
        holds(lambda e: log_identity(e, direct).run(), "the moments of q integrated directly in z", elbo_int),
        before=sp.Integral(q_density * (joint - log_q), (z, -sp.oo, sp.oo)),
        kind="computed",
        scope=CONJUGATE,
    )
    kl = get("gaussian_kl").result("kl")  # E1
    recon = expect_normal(log_lik, z, m, v)
    recon_direct = expect_normal_direct(log_lik, z, m, v)
    d.step(
        "E_q[log p(x|z)] = ∫ q(z|x) log N(x; w z + b, s2) dz, integrated by SymPy",
        recon,
        "integrate each power of z against q",
        holds(lambda e: log_identity(e, recon_direct).run(), "the moments of q integrated directly in z", recon),
        before=sp.Integral(q_density * log_lik, (z, -sp.oo, sp.oo)),
        kind="computed",
        scope=CONJUGATE,
    )
    kl_prior = kl.at(m, v, 0, 1)
    kl_prior_int = expect_normal(log_q - log_prior, z, m, v)
    d.step(
        "KL(q(z|x) ‖ p(z)) = KL(N(m, v) ‖ N(0, 1)), E1's closed form, equals its integral",
        kl_prior,
        "E1 at mu1 = m, var1 = v, mu2 = 0, var2 = 1; compared with ∫ q (log q − log p(z)) dz",
        holds(lambda e: log_identity(kl_prior_int, e).run(), "E1's KL against the integral over z", kl_prior),
        before=sp.Integral(q_density * (log_q - log_prior), (z, -sp.oo, sp.oo)),
        scope=CONJUGATE,
    )
    elbo_claimed = elbo.subs({RECON: recon, KL_PRIOR: kl_prior})
    d.step(
        "ELBO = E_q[log p(x|z)] − KL(q(z|x) ‖ p(z)), with the KL from E1",
        elbo_claimed,
        "E_q[log p(x|z)] integrated against q; KL(N(m, v) ‖ N(0, 1)) from E1",
        log_identity(direct, elbo_claimed),
        before=elbo_int,
        scope=CONJUGATE,
    )
    gap = kl.at(m, v, post_mean, post_var)
    d.step(
        "The gap log p(x) − ELBO is KL(q(z|x) ‖ p(z|x)), E1's KL against the exact posterior",
        gap,
        "log p(x) and the ELBO integrated / completed by SymPy, E1's KL at (m, v, posterior mean, variance)",
        log_identity(log_px - elbo_int, gap),
        before=LOG_PX - ELBO,
        scope=CONJUGATE,
    )
    log_marginal_claimed = log_marginal.subs({ELBO: elbo_int, GAP: gap})
    d.step(
        "log p(x) = ELBO + KL(q(z|x) ‖ p(z|x)), with the KL from E1 against the exact posterior",
        log_marginal_claimed,
        "both sides integrated / completed by SymPy and compared",
        log_identity(log_px, log_marginal_claimed),
        before=log_px,
        scope=CONJUGATE,
    )

    # ---- inequalities: ELBO ≤ log p(x) by Gibbs (E1); ELBO ≤ IWAE_k ≤ log p(x) by L1 (E1) --------------------
    e1 = get("gaussian_kl")
    gibbs = next(st.after for st in e1.steps if st.statement.startswith("Gibbs"))
    lemma = next(st.after for st in e1.steps if st.statement.startswith("Lemma L1"))
    mu1, var1, mu2, var2 = kl.args
    bound = bound_relation(elbo_int, log_px)
    d.step(
        "Hence ELBO ≤ log p(x): the gap is a KL, ≥ 0 by Gibbs' inequality (E1), = 0 iff q(z|x) = p(z|x)",
        bound,
        "log p(x) − ELBO = KL(q ‖ p(z|x)) ≥ 0 (E1, Gibbs at the exact posterior's mean and variance)",
        nonnegative_parts(
            bound,
            [Part(gap, gibbs, ((mu1, m), (var1, v), (mu2, post_mean), (var2, post_var)), "Gibbs (E1)")],
        ),
        scope=CONJUGATE,
    )
    i, j, k = sp.symbols("i j k", integer=True, positive=True)
    W = sp.IndexedBase("w", positive=True)  # importance weights w_i = p(x, z_i)/q(z_i|x) > 0
    mean_w = sp.Sum(W[j], (j, 1, k)) / k
    jensen = sp.Le(sp.Sum(sp.log(W[i]), (i, 1, k)) / k, sp.log(mean_w))
    d.step(
        "Jensen for the mean of k weights, from L1: (1/k) Σ log w_i ≤ log((1/k) Σ w_i) for any w_i > 0",
        jensen,
        "L1 at r = w_i / mean(w), summed over i: Σ (w_i/mean − 1) = 0 leaves k log mean − Σ log w_i ≥ 0",
        nonnegative_parts(
            jensen,
            [
                Part(
                    sp.Sum(W[i] / mean_w - 1 - sp.log(W[i] / mean_w), (i, 1, k)) / k,
                    lemma,
                    ((r_, W[i] / mean_w),),
                    "L1 at r = w_i/mean(w), summed",
                )
            ],
        ),
    )
    IWAE, E_M = sp.Symbol("IWAE_k", real=True), sp.Symbol("E[mean(w)]", positive=True)
    M, P = sp.Symbol("mean(w)", positive=True), sp.Symbol("p(x)", positive=True)
    iwae_lower = sp.Le(ELBO, IWAE)

    def expectation_of_jensen(rel) -> tuple[bool, str]:
        # E is linear and monotone: E[(1/k) Σ log w_i] = (1/k) Σ E[log w_i] = ELBO (w_i identically distributed,
        # E[log w_i] = ELBO by definition), E[log mean(w)] = IWAE_k by definition; the relation keeps its direction.
        lhs = sp.Sum(ELBO, (i, 1, k)).doit() / k  # E applied to the Sum term by term
        ok = type(rel) is type(jensen) and sp.simplify(rel.lhs - lhs) == 0 and rel.rhs == IWAE
        return ok, f"E[lhs] = {lhs}, E[rhs] = IWAE_k; direction {type(jensen).__name__} kept"

    d.step(
        "ELBO ≤ IWAE_k: take E over z_1..z_k ~ q i.i.d. of the previous step with w_i = p(x, z_i)/q(z_i|x)",
        iwae_lower,
        "E is linear and monotone; E[log w_i] = ELBO for each i, E[log mean(w)] = IWAE_k",
        holds(expectation_of_jensen, "E applied to both sides of the Jensen step", iwae_lower),
    )
    iwae_upper = sp.Le(IWAE - sp.log(P), E_M / P - 1)
    pointwise_upper = sp.Le(sp.log(M) - sp.log(P), M / P - 1)

    def upper(rel) -> tuple[bool, str]:
        # pointwise: L1 at r = mean(w)/p(x); then E (linear, monotone) with E[log mean(w)] = IWAE_k
        ok, detail = nonnegative_parts(
            pointwise_upper, [Part(M / P - 1 - sp.log(M / P), lemma, ((r_, M / P),), "L1")]
        ).run()
        image = pointwise_upper.xreplace({sp.log(M): IWAE, M: E_M})
        same = (
            type(rel) is type(image) and sp.simplify(rel.lhs - image.lhs) == 0 and sp.simplify(rel.rhs - image.rhs) == 0
        )
        return ok and same, f"{detail}; E of both sides (linear in mean(w) on the right): {same}"

    d.step(
        "IWAE_k − log p(x) ≤ E[mean(w)]/p(x) − 1: L1 at r = mean(w)/p(x), then E of both sides",
        iwae_upper,
        "log r ≤ r − 1 (E1, L1) pointwise; E is linear and monotone",
        holds(upper, "L1 instance, then E applied to both sides", iwae_upper),
    )
    unbiased = sp.exp(log_px)
    d.step(
        "E[mean(w)] = E_q[p(x, z)/q(z|x)] = ∫ p(x, z) dz = p(x): the weights are unbiased",
        unbiased,
        "q cancels in q·(p/q); the integral of the joint is the marginal (the square completed above)",
        holds(
            lambda e: log_identity(sp.log(e), log_integral_exp_quadratic(sq)).run(),
            "log of the claimed E[w] against log ∫ exp(log p(x, z)) dz",
            unbiased,
        ),
        before=sp.Integral(sp.exp(joint), (z, -sp.oo, sp.oo)),
        scope=CONJUGATE,
    )
    chain = sp.Le(IWAE, sp.log(P))
    d.step(
        "Hence ELBO ≤ IWAE_k ≤ log p(x) for every k (and every model: k = 1 gives ELBO ≤ log p(x) by L1 alone)",
        chain,
        "substitute E[mean(w)] = p(x): the right-hand side of the previous bound is 0",
        holds(
            lambda rel: (
                type(rel) is type(iwae_upper)
                and sp.simplify((rel.lhs - rel.rhs) - (iwae_upper.lhs - iwae_upper.rhs).xreplace({E_M: P})) == 0,
                "IWAE_k − log p(x) ≤ p(x)/p(x) − 1 = 0",
            ),
            "the previous bound at E[mean(w)] = p(x)",
            chain,
        ),
    )

    d.export("elbo", elbo_int, (x, w, b, s2, m, v), "ELBO = E_q[log p(x, z) − log q(z|x)], nats (≤ log p(x))")
    d.export("log_marginal", log_normal(x, b, marginal_variance), (x, w, b, s2), "exact log p(x), nats")
    d.export("gap", gap, (x, w, b, s2, m, v), "KL(q(z|x) ‖ p(z|x)) = log p(x) − ELBO, nats")
    d.export("reconstruction", recon, (x, w, b, s2, m, v), "E_q[log p(x|z)], nats")
    d.export("kl_prior", kl_prior, (m, v), "KL(q(z|x) ‖ p(z)), nats")
    d.export("posterior_mean", post_mean, (x, w, b, s2), "mean of p(z|x)")
    d.export("posterior_variance", post_var, (w, s2), "variance of p(z|x)")
    return d

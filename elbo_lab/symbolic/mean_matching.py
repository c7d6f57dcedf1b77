"""E8 -- mean matching: the KL between the posterior and a reverse step with fixed variance.

Guide section: "Diffusion ELBO derivation".  Each term L_{t-1} (t >= 2) of the diffusion bound (E7) is
KL(q(x_{t-1}|x_t, x_0) ‖ p_θ(x_{t-1}|x_t)) = KL(N(μ̃_t, β̃_t I) ‖ N(μ_θ, σ_t² I)).  With E1's closed form,

    KL = ‖μ̃_t − μ_θ‖² / (2σ_t²) + C,    C = D/2 · (log(σ_t²/β̃_t) + β̃_t/σ_t² − 1)

where C does not depend on μ_θ, and C = 0 when σ_t² = β̃_t.  So training μ_θ under the bound is a squared
error on the means, weighted by 1/(2σ_t²).

Exports (argument order fixed; per dimension, nats; the D-dimensional diagonal KL is the sum over dimensions):

- ``kl(mu_q, var_q, mu_p, var_p)``: KL(N(mu_q, var_q) ‖ N(mu_p, var_p)), E1's result under the renaming.
- ``kl_equal_var(mu_q, mu_p, sigma2)``: the KL when both variances are sigma2, = (mu_q − mu_p)²/(2 sigma2).
- ``const(var_q, sigma2)``: C per dimension, the part of the KL that does not depend on the means.

Tested in ``tests/test_symbolic_objective.py`` (wrong claims give ✗; the KL equals scipy quadrature of the
log-ratio at random parameters).
"""

from __future__ import annotations

import sympy as sp

from .core import Derivation, equal, holds

mu_q, mu_p, mu_theta = sp.symbols("mu_q mu_p mu_theta", real=True)
var_q, var_p, sigma2 = sp.symbols("var_q var_p sigma2", positive=True)

TEXTBOOK_QUADRATIC = (mu_q - mu_p) ** 2 / (2 * sigma2)
TEXTBOOK_CONST = sp.Rational(1, 2) * (sp.log(sigma2 / var_q) + var_q / sigma2 - 1)


def build(*, quadratic=TEXTBOOK_QUADRATIC, const=TEXTBOOK_CONST) -> Derivation:
    """Build E8. ``quadratic`` (in mu_q, mu_p, sigma2) and ``const`` (in var_q, sigma2) are the claimed forms."""
    from . import get

    d = Derivation("mean_matching", "E8", "Mean matching: KL of equal-variance Gaussians", "Diffusion ELBO derivation")
    d.assume("var_q > 0, var_p > 0, sigma2 > 0 (σ_t² > 0)")

    # E1's KL, renamed: p = N(mu_q, var_q) is the posterior q(x_{t-1}|x_t, x_0), q = N(mu_p, sigma2) the model.
    e1 = get("gaussian_kl").result("kl")
    kl_e1 = e1.at(mu_q, var_q, mu_p, var_p)
    kl_general = sp.expand(kl_e1)
    kl_symbol = sp.Symbol(r"\mathrm{KL}(\mathcal{N}(\mu_q,v_q)\,\|\,\mathcal{N}(\mu_p,v_p))")

    def from_e1(kl) -> tuple[bool, str]:
        # The renamed E1 result; it vanishes at equal parameters and has curvature 1/var_p in mu_p -- properties
        # a mis-substitution (e.g. swapping the two variances) would break.
        same = sp.simplify(sp.expand_log(kl - kl_e1, force=True))
        zero = sp.simplify(kl.subs({mu_p: mu_q, var_p: var_q}))
        curv = sp.simplify(sp.diff(kl, mu_p, 2) - 1 / var_p)
        return (
            same == 0 and zero == 0 and curv == 0,
            f"minus E1 = {same}; KL(equal) = {zero}; curvature − 1/var_p = {curv}",
        )

    d.step(
        "Per dimension, E1 gives the KL of the posterior N(mu_q, var_q) from the model step N(mu_p, var_p)",
        kl_general,
        "E1 `gaussian_kl` result `kl` with (mu1, var1, mu2, var2) = (mu_q, var_q, mu_p, var_p)",
        holds(
            from_e1, "E1's result renamed: equal to it, zero at equal parameters, curvature 1/var_p in mu_p", kl_general
        ),
        before=kl_symbol,
    )
    kl_expr = kl_general.subs(var_p, sigma2)  # the model step's variance is the fixed σ_t² = sigma2

    # C is what is left when the means agree (the KL's mean dependence is a pure square -- proved next).
    c_derived = sp.expand(kl_expr.subs(mu_p, mu_q))
    d.step(
        "Split off the mean dependence: KL = (mu_q - mu_p)²/(2 sigma2) + C(var_q, sigma2)",
        quadratic + c_derived,
        "the only mean-dependent term of E1's closed form is the squared difference over twice the variance",
        equal(kl_expr, quadratic + c_derived, method="expand_log"),
        before=kl_expr,
    )

    def c_free_of_means(eq) -> tuple[bool, str]:
        free = c_derived.free_symbols
        d_mu = sp.simplify(sp.diff(kl_expr - quadratic, mu_p))
        ok = free <= {var_q, sigma2} and sp.simplify(d_mu - eq.rhs) == 0
        return ok, f"C depends on {sorted(map(str, free))}; d(KL - quad)/dmu_p = {d_mu}"

    free_of_mean = sp.Eq(sp.Derivative(sp.Symbol("C"), mu_p), 0)
    d.step(
        "C does not depend on the model mean mu_p (so it drops out of every gradient with respect to mu_θ)",
        free_of_mean,
        "C is the KL at equal means; the remainder KL - quadratic has zero derivative in mu_p",
        holds(c_free_of_means, "free symbols of C and d(KL - quadratic)/dmu_p", free_of_mean),
    )
    d.step(
        "C in closed form: ½(log(sigma2/var_q) + var_q/sigma2 - 1)",
        c_derived,
        "E1 at equal means",
        holds(
            lambda e: (
                sp.expand(kl_expr.subs(mu_p, mu_q)) - e == 0 and sp.simplify(sp.expand_log(e - const, force=True)) == 0,
                f"KL at mu_p = mu_q, against the claimed {const}",
            ),
            "KL at equal means, compared with the claimed closed form",
            c_derived,
        ),
        before=sp.Symbol("C"),
        kind="computed",
    )
    kl_eq = sp.factor(sp.expand_log(kl_expr.subs(var_q, sigma2), force=True))
    d.step(
        "With sigma2 = var_q (σ_t² = β̃_t) the constant vanishes: KL = (mu_q - mu_p)²/(2 sigma2) exactly",
        kl_eq,
        "log 1 + 1 - 1 = 0",
        holds(
            lambda e: (
                sp.simplify(sp.expand_log(kl_expr.subs(var_q, sigma2) - e, force=True)) == 0
                and sp.simplify(e - quadratic) == 0,
                "the KL at var_q = sigma2 is the claimed quadratic",
            ),
            "KL at var_q = sigma2, compared with the quadratic",
            kl_eq,
        ),
        before=kl_expr.subs(var_q, sigma2),
        kind="computed",
    )

    # Diagonal D-dim version (D = 3, shared isotropic variances): the KL is the sum of per-dimension KLs (E1), so
    # the quadratics add to ‖μ̃ − μ_θ‖²/(2σ²) and the constants to D·C.
    dim = 3
    mqs, mps = sp.symbols(f"mq_1:{dim + 1}", real=True), sp.symbols(f"mp_1:{dim + 1}", real=True)
    kl_sum = sum(kl_expr.subs({mu_q: a, mu_p: b}) for a, b in zip(mqs, mps))
    sq_norm = sum((a - b) ** 2 for a, b in zip(mqs, mps))
    vector_form = sq_norm / (2 * sigma2) + dim * const
    d.step(
        f"Diagonal case (D = {dim}, covariances var_q I and sigma2 I): sum of per-dimension KLs = "
        "‖μ_q - μ_p‖²/(2 sigma2) + D·C",
        vector_form,
        "E1: the diagonal KL is the sum of univariate KLs; the squares add up to the squared norm",
        equal(kl_sum, vector_form, method="expand_log"),
        before=kl_sum,
        scope="D = 3",
    )

    d.export("kl", kl_general, (mu_q, var_q, mu_p, var_p), "KL(N(mu_q,var_q) ‖ N(mu_p,var_p)), nats")
    d.export(
        "kl_equal_var",
        kl_eq,
        (mu_q, mu_p, sigma2),
        "KL(N(mu_q,sigma2) ‖ N(mu_p,sigma2)) = (mu_q - mu_p)²/(2 sigma2), nats",
    )
    d.export("const", c_derived, (var_q, sigma2), "C(var_q, sigma2): mean-free part of the KL per dimension, nats")
    return d

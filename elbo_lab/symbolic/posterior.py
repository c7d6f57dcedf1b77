"""E6 -- the forward-process posterior q(x_{t-1}|x_t, x_0) = N(μ̃_t, β̃_t), by Bayes and completing the square.

Guide section: "Reverse diffusion process".  With q(x_t|x_{t-1}) = N(√α_t x_{t-1}, β_t) and the E5 marginals
q(x_{t-1}|x_0) = N(√ᾱ_{t-1} x_0, 1 - ᾱ_{t-1}), q(x_t|x_0) = N(√ᾱ_t x_0, 1 - ᾱ_t)  (α_t = 1 - β_t,
ᾱ_t = α_t ᾱ_{t-1}; scalar x, the image case applies it per pixel):

    β̃_t = (1 - ᾱ_{t-1}) β_t / (1 - ᾱ_t)
    μ̃_t = √ᾱ_{t-1} β_t/(1 - ᾱ_t) x_0 + √α_t (1 - ᾱ_{t-1})/(1 - ᾱ_t) x_t          (x_0 form)
        = (x_t - β_t/√(1 - ᾱ_t) ε) / √α_t,   x_0 = (x_t - √(1 - ᾱ_t) ε)/√ᾱ_t     (ε form)

Both are *derived* (read off the coefficients of the log-numerator in x_{t-1}); the textbook forms above are
claims that the steps compare against.  The last step proves the whole Bayes identity including the
normalising constants, so q(x_t|x_0) is exactly the normaliser.

Exports (argument order fixed; ``alpha_bar_prev`` is ᾱ_{t-1}, ``beta`` is β_t):

- ``variance(beta, alpha_bar_prev)``: β̃_t.
- ``mean(x0, xt, beta, alpha_bar_prev)``: μ̃_t in x_0 form; ``coef_x0`` and ``coef_xt`` (same last two args)
  are its coefficients.
- ``mean_eps(xt, eps, beta, alpha_bar_prev)``: μ̃_t in ε form.
- ``x0_from_eps(xt, eps, beta, alpha_bar_prev)``: x_0 recovered from x_t and ε.

Claims (overridable for tests): ``variance``, ``mean``, ``mean_eps`` -- expressions in this module's ``x0``,
``xt``, ``eps``, ``beta``, ``alpha_bar_prev``.  Tested in ``tests/test_symbolic_diffusion.py`` against the
numerically integrated Bayes posterior (scipy.integrate.quad).
"""

from __future__ import annotations

import sympy as sp

from .algebra import (
    Square,
    coefficients,
    complete_square,
    completes_square,
    log_identity,
    log_integral_exp_quadratic,
    log_normal,  # the function behind E1's exported ``log_density``
)
from .core import Derivation, coefficients_equal, holds
from .forward_marginal import alpha, alpha_bar_prev, beta, eps, x0, x_prev, xt

_alpha_bar_t = (1 - beta) * alpha_bar_prev
TEXTBOOK_VARIANCE = (1 - alpha_bar_prev) / (1 - _alpha_bar_t) * beta
TEXTBOOK_MEAN = (
    sp.sqrt(alpha_bar_prev) * beta / (1 - _alpha_bar_t) * x0
    + sp.sqrt(1 - beta) * (1 - alpha_bar_prev) / (1 - _alpha_bar_t) * xt
)
TEXTBOOK_MEAN_EPS = (xt - beta / sp.sqrt(1 - _alpha_bar_t) * eps) / sp.sqrt(1 - beta)

IN_ALPHA = {beta: 1 - alpha}  # work with α_t > 0 so that √(α_t ᾱ_{t-1}) = √α_t √ᾱ_{t-1}
IN_BETA = {alpha: 1 - beta}  # exported results are in β_t, ᾱ_{t-1}


def _zero(expr) -> bool:
    return sp.cancel(sp.together(expr)) == 0


CONST = sp.Symbol("const(x_t, x_0)")


def build(*, variance=TEXTBOOK_VARIANCE, mean=TEXTBOOK_MEAN, mean_eps=TEXTBOOK_MEAN_EPS) -> Derivation:
    """Build E6. ``variance``, ``mean``, ``mean_eps`` are the claimed forms (tests pass wrong ones)."""
    from . import get

    d = Derivation("posterior", "E6", "Posterior q(x_{t-1}|x_t, x_0) by Bayes", "Reverse diffusion process")
    d.assume("0 < β_t < 1, α_t = 1 − β_t", "0 < ᾱ_t = α_t ᾱ_{t−1} ≤ ᾱ_{t−1} < 1 (t ≥ 2)")
    fm = get("forward_marginal")

    def use(name, *values):  # an E5 result at these arguments, in α_t
        return fm.result(name).at(*values).xreplace(IN_ALPHA)

    ab_t = alpha * alpha_bar_prev
    log_fwd = log_normal(xt, use("step_mean", x_prev, beta), use("step_variance", beta))
    log_prev = log_normal(x_prev, use("mean", x0, alpha_bar_prev), use("variance", alpha_bar_prev))
    log_marg = log_normal(xt, use("mean", x0, ab_t), use("variance", ab_t))
    numerator = log_fwd + log_prev

    # 1. Bayes with the Markov property; the denominator is the x_{t-1}-integral of the numerator.
    sq = complete_square(numerator, x_prev)
    integrated = log_integral_exp_quadratic(sq)  # E5 steps 2-4: log ∫ exp(A x² + B x + C) dx
    d.step(
        "Bayes: q(x_{t-1}|x_t, x_0) = q(x_t|x_{t-1}, x_0) q(x_{t-1}|x_0) / q(x_t|x_0), and q(x_t|x_{t-1}, x_0) ="
        " q(x_t|x_{t-1}) (Markov); the denominator is the E5 marginal N(√ᾱ_t x_0, 1 - ᾱ_t)",
        bayes := numerator - log_marg,
        "the denominator is ∫ numerator dx_{t-1}: log ∫ exp(A x² + B x + C) dx = C - B²/(4A) + ½ log(π/(-A))",
        holds(
            lambda e: log_identity(integrated, numerator - e, [xt, x0]).run(),
            "log numerator − (after) == log ∫ numerator dx_{t-1}, as polynomials in x_t, x_0",
            bayes,
        ),
        before=sp.Symbol("log q(x_{t-1}|x_t, x_0)"),
    )

    # 2. The log-numerator is quadratic in x_{t-1}; its leading coefficient is minus half a precision.
    c = coefficients(numerator, x_prev)
    A, B, C = sp.cancel(c[2]), sp.cancel(c[1]), c[0]
    precision = alpha / beta + 1 / (1 - alpha_bar_prev)
    d.step(
        "The log-numerator is a quadratic A x_{t-1}² + B x_{t-1} + C with -2A = α_t/β_t + 1/(1 - ᾱ_{t-1}) > 0",
        quad := A * x_prev**2 + B * x_prev + C,
        "expand both squared exponents and collect powers of x_{t-1}",
        holds(
            lambda e: (
                log_identity(numerator, e, [x_prev]).run()[0] and _zero((-2 * A - precision).subs(IN_ALPHA)),
                "coefficients in x_prev agree; -2A - (α/β + 1/(1-ᾱ_{t-1})) = 0",
            ),
            "coefficients in x_prev agree and -2A is the summed precision",
            quad,
        ),
        before=numerator,
        kind="computed",
    )

    # 3. Complete the square: variance -1/(2A), mean -B/(2A) -- derived, not typed in.
    var_derived = sp.factor(sp.cancel(sq.variance))
    mean_derived = sp.collect(sp.cancel(sq.centre), [x0, xt], sp.factor)
    square = -((x_prev - mean_derived) ** 2) / (2 * var_derived)
    derived_square = Square(x_prev, -1 / (2 * var_derived), mean_derived, sq.const)
    d.step(
        "Completing the square: log-numerator = -(x_{t-1} - μ̃_t)²/(2β̃_t) + const(x_t, x_0), with β̃_t = -1/(2A) and"
        " μ̃_t = -B/(2A)",
        completed := square + CONST,
        "A x² + B x = A (x + B/(2A))² - B²/(4A)",
        holds(
            lambda e: completes_square(numerator, derived_square).run((numerator, e.xreplace({CONST: sq.const}))),
            "coefficients in x_{t-1} against the completed square (const = the x_{t-1}-free rest)",
            completed,
        ),
        before=numerator,
        kind="computed",
    )

    # 4. The variance equals the claimed textbook form.
    d.step(
        "β̃_t = (1 - ᾱ_{t-1}) β_t / (1 - ᾱ_t)",
        variance,
        "1/(α_t/β_t + 1/(1-ᾱ_{t-1})) = β_t (1-ᾱ_{t-1})/(α_t (1-ᾱ_{t-1}) + β_t) and α_t (1-ᾱ_{t-1}) + β_t = 1 - ᾱ_t",
        holds(
            lambda e: (
                _zero(var_derived - e.subs(IN_ALPHA)),
                f"residual {sp.sstr(sp.factor(sp.cancel(var_derived - e.subs(IN_ALPHA))))[:200]}",
            ),
            "cancel(derived β̃ - claimed) == 0",
            variance,
        ),
        before=var_derived,
    )

    # 5. The mean in x_0 form: compare the coefficients of x_0 and x_t.
    d.step(
        "μ̃_t = √ᾱ_{t-1} β_t/(1 - ᾱ_t) x_0 + √α_t (1 - ᾱ_{t-1})/(1 - ᾱ_t) x_t  (x_0 form)",
        mean,
        "-B/(2A) = β̃_t (√ᾱ_{t-1} x_0/(1 - ᾱ_{t-1}) + √α_t x_t/β_t)",
        holds(
            lambda e: coefficients_equal(mean_derived, e.subs(IN_ALPHA), [x0, xt]).run(),
            "coefficients in (x0, xt) agree",
            mean,
        ),
        before=mean_derived,
    )

    # 6. x_0 from ε: solve E5's reparameterized draw x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε for x_0.
    draw = use("sample", x0, eps, ab_t)
    d1, d0 = sp.Poly(draw, x0).all_coeffs()  # the draw is linear in x_0
    x0_eps = (xt - d0) / d1
    d.step(
        "E5's draw x_t = √ᾱ_t x_0 + √(1 - ᾱ_t) ε, solved for x_0: x_0 = (x_t - √(1 - ᾱ_t) ε)/√ᾱ_t",
        x0_eps,
        "the draw is linear in x_0",
        holds(lambda e: (_zero(draw.subs(x0, e) - xt), "draw(x_0(x_t, ε), ε) - x_t = 0"), "substitute back", x0_eps),
        before=x0,
        kind="computed",
    )

    # 7. The mean in ε form.
    mean_eps_derived = sp.collect(
        sp.expand(mean_derived.subs(x0, x0_eps)), [xt, eps], lambda c: sp.factor(sp.cancel(c))
    )
    d.step(
        "Substituting x_0(x_t, ε): μ̃_t = (x_t - β_t/√(1 - ᾱ_t) ε)/√α_t  (ε form)",
        mean_eps,
        "the x_t-coefficient (β_t + α_t (1 - ᾱ_{t-1}))/(√α_t (1 - ᾱ_t)) = 1/√α_t because β_t = 1 - α_t",
        holds(
            lambda e: coefficients_equal(mean_eps_derived, e.subs(IN_ALPHA), [xt, eps]).run(),
            "coefficients in (xt, eps) agree",
            mean_eps,
        ),
        before=mean_derived.subs(x0, x0_eps),
    )

    # 8. Normalisation: the Bayes ratio *is* the normalised Gaussian density N(x_{t-1}; μ̃_t, β̃_t).
    log_post = log_normal(x_prev, mean_derived, var_derived)
    d.step(
        "Hence log q(x_t|x_{t-1}) + log q(x_{t-1}|x_0) - log q(x_t|x_0) = log N(x_{t-1}; μ̃_t, β̃_t) exactly,"
        " normalising constants included",
        log_post,
        "the constants: ½ log(2πβ_t) + ½ log(2π(1-ᾱ_{t-1})) - ½ log(2π(1-ᾱ_t)) = ½ log(2π β̃_t)",
        log_identity(numerator - log_marg, log_post, [x_prev, xt, x0]),
        before=numerator - log_marg,
        kind="computed",
    )

    mean_poly = sp.Poly(mean_derived, x0, xt)  # linear in (x_0, x_t)
    coef_x0 = sp.factor(mean_poly.coeff_monomial(x0).subs(IN_BETA))
    coef_xt = sp.factor(mean_poly.coeff_monomial(xt).subs(IN_BETA))
    eps_poly = sp.Poly(mean_eps_derived, xt, eps)
    mean_eps_beta = sum(sp.factor(eps_poly.coeff_monomial(s).subs(IN_BETA)) * s for s in (xt, eps))
    var_beta, mean_beta, x0_eps_beta = (
        sp.factor(var_derived.subs(IN_BETA)),
        coef_x0 * x0 + coef_xt * xt,
        x0_eps.subs(IN_BETA),
    )
    derived = (
        var_derived,
        mean_derived,
        mean_poly.coeff_monomial(x0),
        mean_poly.coeff_monomial(xt),
        mean_eps_derived,
        x0_eps,
    )
    in_beta = sp.Tuple(var_beta, mean_beta, coef_x0, coef_xt, mean_eps_beta, x0_eps_beta)

    def same_in_alpha(forms) -> tuple[bool, str]:
        bad = [i for i, (f, g) in enumerate(zip(forms, derived)) if not _zero(f.subs(IN_ALPHA) - g)]
        return not bad and len(forms) == len(derived), f"entries differing: {bad}" if bad else "all six agree"

    d.step(
        "In β_t and ᾱ_{t−1} (β̃_t, μ̃_t, its x_0 and x_t coefficients, the ε form, x_0 from ε): the exported forms",
        in_beta,
        "substitute α_t = 1 − β_t",
        holds(same_in_alpha, "each form, with β_t = 1 − α_t, minus the derived one == 0", in_beta),
    )
    d.export("variance", var_beta, (beta, alpha_bar_prev), "β̃_t")
    d.export("mean", mean_beta, (x0, xt, beta, alpha_bar_prev), "μ̃_t, x_0 form")
    d.export("coef_x0", coef_x0, (beta, alpha_bar_prev), "coefficient of x_0 in μ̃_t")
    d.export("coef_xt", coef_xt, (beta, alpha_bar_prev), "coefficient of x_t in μ̃_t")
    d.export("mean_eps", mean_eps_beta, (xt, eps, beta, alpha_bar_prev), "μ̃_t, ε form")
    d.export("x0_from_eps", x0_eps_beta, (xt, eps, beta, alpha_bar_prev), "x_0 from x_t and ε")
    return d

"""E5 -- the forward marginal q(x_t|x_0) = N(√ᾱ_t x_0, 1 - ᾱ_t), by induction over t.

Guide section: "Forward diffusion noise process".  One forward step is q(x_t|x_{t-1}) = N(√α_t x_{t-1}, β_t)
with α_t = 1 - β_t and ᾱ_t = α_1 ⋯ α_t (scalar x; the image case applies it per pixel).  The derivation merges
two Gaussian steps by evaluating the convolution integral (completing the square plus the Gaussian integral
∫ exp(-A y²) dy = √(π/A), integrated by SymPy), unrolls the merged recurrence for t = 3 to obtain the closed
form, and proves it for every t by induction (base case t = 1, inductive step t-1 → t).

Exports (argument order fixed; all in nats where a log appears):

- ``mean(x0, alpha_bar)``: √ᾱ_t x_0, the mean of q(x_t|x_0).
- ``variance(alpha_bar)``: 1 - ᾱ_t, its variance.
- ``sample(x0, eps, alpha_bar)``: √ᾱ_t x_0 + √(1-ᾱ_t) ε, a reparameterized draw (ε ~ N(0, 1)).
- ``eps_from_xt(xt, x0, alpha_bar)``: the ε that produced x_t from x_0.
- ``step_mean(x_prev, beta)``: √(1-β_t) x_{t-1}, the mean of one forward step q(x_t|x_{t-1}).
- ``step_variance(beta)``: β_t, its variance.

Claims (overridable for tests): ``mean`` and ``variance``, expressions in this module's ``x0`` and
``alpha_bar``.  Numeric counterparts are tested in ``tests/test_symbolic_diffusion.py`` against a sampled chain.
"""

from __future__ import annotations

import sympy as sp

from .algebra import (
    coefficients,
    complete_square,
    completes_square,
    gaussian_integral_step,
    log_identity,
    log_integral_exp_quadratic,
    log_normal,  # the function behind E1's exported ``log_density``
    log_residual,
)
from .core import Derivation, holds

x0, xt, x_prev, eps = sp.symbols("x0 xt x_prev eps", real=True)
beta, alpha, alpha_bar, alpha_bar_prev = sp.symbols("beta alpha alpha_bar alpha_bar_prev", positive=True)
m = sp.Symbol("m", real=True)  # mean of the inductive hypothesis q(x_{t-1}|x_0)
v = sp.Symbol("v", positive=True)  # its variance

TEXTBOOK_MEAN = sp.sqrt(alpha_bar) * x0
TEXTBOOK_VARIANCE = 1 - alpha_bar

STEP_MEAN = sp.sqrt(1 - beta) * x_prev  # q(x_t|x_{t-1}) = N(√α_t x_{t-1}, β_t): the definition of the forward step
STEP_VARIANCE = beta
ONE_MINUS = {beta: 1 - alpha}  # α_t = 1 - β_t, imposed before comparing


def build(*, mean=TEXTBOOK_MEAN, variance=TEXTBOOK_VARIANCE) -> Derivation:
    """Build E5. ``mean``/``variance`` are the claimed closed forms in ``x0``, ``alpha_bar`` (tests pass wrong ones)."""
    d = Derivation(
        "forward_marginal", "E5", "Forward marginal q(x_t|x_0) by induction", "Forward diffusion noise process"
    )
    d.assume("0 < β_t < 1, α_t = 1 − β_t", "0 < ᾱ_t = α_t ᾱ_{t−1} ≤ ᾱ_{t−1} ≤ 1 (ᾱ_0 = 1)")
    step_mean = STEP_MEAN.subs(ONE_MINUS)  # √α x_{t-1}
    log_step = log_normal(xt, step_mean, STEP_VARIANCE).subs(ONE_MINUS)

    # 1. The forward step as a reparameterized draw: change of variables ε -> x_t has the step's density.
    eps_of_xt = (xt - step_mean) / sp.sqrt(1 - alpha)
    step_params = sp.Tuple(STEP_MEAN, STEP_VARIANCE)
    d.step(
        "One forward step q(x_t|x_{t-1}) = N(√α_t x_{t-1}, β_t), α_t = 1 - β_t, is the draw"
        " x_t = √α_t x_{t-1} + √β_t ε",
        step_params,
        "change of variables ε = (x_t - √α_t x_{t-1})/√β_t, Jacobian 1/√β_t",
        holds(
            lambda mv: log_identity(
                log_normal(eps_of_xt, 0, 1) - sp.log(1 - alpha) / 2,
                log_normal(xt, mv[0], mv[1]).subs(ONE_MINUS),
                [xt, x_prev],
            ).run(),
            "the draw's change-of-variables density against N(x_t; mean, variance), as polynomials in x_t, x_{t-1}",
            step_params,
        ),
        before=sp.Symbol("(mean, variance) of q(x_t|x_{t-1})"),
    )

    # 2. The Gaussian integral, evaluated by SymPy.
    gaussian_integral_step(d)

    # 3. Merge: q(x_t|x_0) = ∫ q(x_t|x_{t-1}) N(x_{t-1}; m, v) dx_{t-1}.  The log-integrand is quadratic in x_{t-1}.
    log_integrand = log_step + log_normal(x_prev, m, v)
    sq = complete_square(log_integrand, x_prev)
    precision = alpha / beta + 1 / v
    d.step(
        "Merge two Gaussian steps: with q(x_{t-1}|x_0) = N(m, v), the log-integrand of ∫ q(x_t|x_{t-1}) q(x_{t-1}|x_0)"
        " dx_{t-1} is A x_{t-1}² + B x_{t-1} + C; complete the square",
        sq.expr,
        "A = -(α_t/β_t + 1/v)/2 < 0, so the integral is Gaussian in x_{t-1}",
        holds(
            lambda e: (
                completes_square(log_integrand, sq).run((log_integrand, e))[0]
                and sp.cancel((-2 * sq.a - precision).subs(ONE_MINUS)) == 0
                and bool(precision.is_positive),
                "coefficients in x_prev agree with the completed square; -2A = α/β + 1/v > 0",
            ),
            "coefficients in x_prev agree with the completed square and -2A = α/β + 1/v > 0",
            sq.expr,
        ),
        before=log_integrand,
        kind="computed",
    )

    # 4. Integrate out x_{t-1} with the Gaussian integral (A = -a after the shift): log q(x_t|x_0).
    log_marg = log_integral_exp_quadratic(sq)
    c = coefficients(log_marg, xt)
    merged_var = sp.factor(sp.cancel(-1 / (2 * c[2])))
    merged_mean = sp.factor(sp.cancel(c[1] * merged_var))
    d.step(
        "Integrating out x_{t-1}: log q(x_t|x_0) = C - B²/(4A) + ½ log(π/(-A)), a Gaussian log-density in x_t with"
        " mean and variance read off its coefficients (derived, not typed in)",
        merged := sp.Tuple(merged_mean, merged_var),
        "Gaussian integral of step 2; mean = -c₁/(2c₂), variance = -1/(2c₂) from the x_t-coefficients",
        holds(
            lambda mv: log_identity(log_marg, log_normal(xt, mv[0], mv[1]), [xt]).run(),
            "log q(x_t|x_0) against log N(x_t; mean, variance) as polynomials in x_t",
            merged,
        ),
        before=log_marg,
        kind="computed",
    )
    d.step(
        "which is what linearity says: mean √α_t m, variance α_t v + β_t (independent noises add variances)",
        linear := sp.Tuple(sp.sqrt(alpha) * m, alpha * v + 1 - alpha),
        "E[√α_t x_{t-1} + √β_t ε] = √α_t m;  Var = α_t v + β_t",
        holds(
            lambda mv: (
                sp.cancel(merged_mean - mv[0]) == 0 and sp.cancel(merged_var - mv[1]) == 0,
                "derived mean and variance minus linearity's = 0",
            ),
            "cancel(derived - linearity) == 0 for mean and variance",
            linear,
        ),
        before=sp.Tuple(sp.sqrt(alpha) * m, alpha * v + beta),
    )

    # 5. Unroll the merged recurrence for t = 3 from x_0 (m = x_0, v = 0): the closed form in ᾱ_3 alone.
    als = sp.symbols("alpha_1:4", positive=True)
    mt, vt = x0, sp.Integer(0)
    for al in als:
        mt, vt = (merged_mean.subs({m: mt, v: vt, alpha: al}), sp.expand(merged_var.subs({m: mt, v: vt, alpha: al})))
    in_alpha_bar = {als[2]: alpha_bar / (als[0] * als[1])}
    derived_mean = sp.cancel(mt.subs(in_alpha_bar))
    derived_var = sp.cancel(vt.subs(in_alpha_bar))
    d.step(
        "Unrolling the merge three times from x_0: q(x_3|x_0) = N(√(α₁α₂α₃) x_0, 1 - α₁α₂α₃), which depends on the"
        " α's only through ᾱ_3 = α₁α₂α₃",
        unrolled := sp.Tuple(derived_mean, derived_var),
        "substitute α₃ = ᾱ_3/(α₁α₂): α₁ and α₂ drop out",
        holds(
            lambda mv: (
                (mv.free_symbols <= {x0, alpha_bar})
                and sp.cancel(mt.subs(in_alpha_bar) - mv[0]) == 0
                and sp.cancel(vt.subs(in_alpha_bar) - mv[1]) == 0,
                f"free symbols {sorted(map(str, mv.free_symbols))}; equal to the unrolled recurrence",
            ),
            "the unrolled mean and variance, in x_0 and ᾱ_3 only",
            unrolled,
        ),
        before=sp.Tuple(mt, vt),
        scope="T = 3 (t = 3 unrolled)",
    )

    # 6. Base case t = 1: ᾱ_1 = α_1, and the claim must be the single forward step.
    base_mean = mean.subs(alpha_bar, alpha)
    base_var = variance.subs(alpha_bar, alpha)
    d.step(
        "Base case t = 1 (ᾱ_1 = α_1): the claimed N(√ᾱ_1 x_0, 1 - ᾱ_1) is the single step N(√α_1 x_0, β_1)",
        base := sp.Tuple(base_mean, base_var),
        "1 - ᾱ_1 = 1 - α_1 = β_1",
        holds(
            lambda mv: (
                sp.cancel(mv[0] - step_mean.subs(x_prev, x0)) == 0 and sp.cancel(mv[1] - (1 - alpha)) == 0,
                f"mean residual {sp.cancel(mv[0] - step_mean.subs(x_prev, x0))}, "
                f"variance residual {sp.cancel(mv[1] - (1 - alpha))}",
            ),
            "claimed (mean, variance) at ᾱ = α_1 minus the step's == 0",
            base,
        ),
        before=sp.Tuple(sp.sqrt(alpha) * x0, sp.Symbol("beta_1", positive=True)),
    )

    # 7. Inductive step: merging the claim at t-1 with one more step gives the claim at t, ᾱ_t = α_t ᾱ_{t-1}.
    hyp = {m: mean.subs(alpha_bar, alpha_bar_prev), v: variance.subs(alpha_bar, alpha_bar_prev)}
    step_mean_t = merged_mean.subs(hyp)
    step_var_t = merged_var.subs(hyp)
    claim_t = {alpha_bar: alpha * alpha_bar_prev}
    d.step(
        "Inductive step: if q(x_{t-1}|x_0) = N(√ᾱ_{t-1} x_0, 1 - ᾱ_{t-1}), the merge gives N(√ᾱ_t x_0, 1 - ᾱ_t)",
        inductive := sp.Tuple(mean.subs(claim_t), variance.subs(claim_t)),
        "√α_t √ᾱ_{t-1} = √ᾱ_t and α_t (1 - ᾱ_{t-1}) + β_t = 1 - α_t ᾱ_{t-1} = 1 - ᾱ_t",
        holds(
            lambda mv: (
                sp.cancel(step_mean_t - mv[0]) == 0 and sp.cancel(step_var_t - mv[1]) == 0,
                f"mean residual {sp.cancel(step_mean_t - mv[0])}, variance residual {sp.cancel(step_var_t - mv[1])}",
            ),
            "merged hypothesis minus the claim at ᾱ_t = α_t ᾱ_{t-1} == 0",
            inductive,
        ),
        before=sp.Tuple(step_mean_t, step_var_t),
    )
    d.step(
        "By induction, q(x_t|x_0) = N(√ᾱ_t x_0, 1 - ᾱ_t) for every t, and it agrees with the unrolled t = 3 form",
        claimed := sp.Tuple(mean, variance),
        "base case and inductive step",
        holds(
            lambda mv: (
                sp.cancel(derived_mean - mv[0]) == 0 and sp.cancel(derived_var - mv[1]) == 0,
                "claim == unrolled closed form",
            ),
            "cancel(claim - unrolled) == 0",
            claimed,
        ),
        before=sp.Symbol("q(x_t|x_0)"),
    )

    # 8. Reparameterization: x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε has this law; solve it for ε.
    sample = derived_mean + sp.sqrt(derived_var) * eps
    s1, s0 = sp.Poly(sample, eps).all_coeffs()  # the draw is linear in ε: solve it
    eps_from_xt = (xt - s0) / s1
    log_q = log_normal(xt, derived_mean, derived_var)

    def draw_has_the_law(eqs) -> tuple[bool, str]:
        draw, inverse = eqs
        slope = sp.diff(draw.rhs, eps)
        ok = (
            log_residual(log_normal(inverse.rhs, 0, 1) - sp.log(slope**2) / 2 - log_q, [xt, x0]) is None
            and sp.cancel(draw.rhs.subs(eps, inverse.rhs) - xt) == 0
        )
        return ok, "log N(ε(x_t); 0, 1) − log|dx_t/dε| == log N(x_t; √ᾱ_t x_0, 1-ᾱ_t), and ε(x_t) inverts the draw"

    draw = sp.Tuple(sp.Eq(xt, sample), sp.Eq(eps, eps_from_xt))
    d.step(
        "Sampling x_t directly: x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε with ε ~ N(0, 1), i.e. ε = (x_t - √ᾱ_t x_0)/√(1-ᾱ_t)",
        draw,
        "change of variables ε -> x_t (Jacobian 1/√(1-ᾱ_t)) gives log q(x_t|x_0)",
        holds(draw_has_the_law, "change-of-variables density of the draw equals the marginal", draw),
    )

    d.export("mean", mean, (x0, alpha_bar), "mean of q(x_t|x_0)")
    d.export("variance", variance, (alpha_bar,), "variance of q(x_t|x_0)")
    d.export("sample", sample, (x0, eps, alpha_bar), "reparameterized draw from q(x_t|x_0)")
    d.export("eps_from_xt", eps_from_xt, (xt, x0, alpha_bar), "noise that maps x_0 to x_t")
    d.export("step_mean", STEP_MEAN, (x_prev, beta), "mean of one forward step q(x_t|x_{t-1})")
    d.export("step_variance", STEP_VARIANCE, (beta,), "variance of one forward step")
    return d

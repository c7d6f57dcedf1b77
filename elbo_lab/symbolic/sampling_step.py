"""E11 -- the DDPM sampling step is a reparameterized draw from p_θ(x_{t−1}|x_t) = N(μ_θ, σ_t²).

Guide section: "Sampling".  The update

    x_{t−1} = (x_t − β_t/√(1−ᾱ_t) · ε_θ(x_t, t)) / √α_t + σ_t z,    z ~ N(0, 1),

has (i) the mean μ_θ(x_t) = the posterior mean μ̃_t in ε form (E6) with ε replaced by the prediction ε_θ, and
(ii) by E2's reasoning (μ + σz with z ~ N(0, 1), integrated against N(0, 1)) the law N(μ_θ, σ_t²): it is an
exact draw from the model's reverse step, for either variance choice σ_t² = β̃_t or σ_t² = β_t.  Built on
E6 (``posterior``) and E2 (``reparameterization``: ``sample``, ``density``).

Conventions: paper indexing, t = 1..T; ``beta`` = β_t, ``alpha_bar_prev`` = ᾱ_{t−1}, α_t = 1 − β_t,
ᾱ_t = α_t ᾱ_{t−1}; ``sigma2`` = σ_t²; schedule quantities positive.  At t = 1 DDPM outputs the mean (no noise;
with σ_1² = β̃_1 = 0 that *is* the step, proved below).  Per dimension; images apply it per pixel.

Exports (argument order fixed):

- ``mean(xt, eps_hat, beta, alpha_bar_prev)``: μ_θ = (x_t − β_t/√(1−ᾱ_t) ε̂)/√α_t.
- ``step(xt, eps_hat, z, beta, alpha_bar_prev, sigma2)``: μ_θ + √σ² · z.

Tested in ``tests/test_symbolic_objective.py`` (a wrong coefficient gives ✗; Monte Carlo mean and variance of the
lambdified step agree with N(μ_θ, σ²) within 4 standard errors).
"""

from __future__ import annotations

import sympy as sp

from .algebra import normal_pdf
from .core import Derivation, coefficients_equal, equal, holds, integral_equals, is_zero
from .eps_weight import alpha, alpha_bar, alpha_bar_prev, beta, eps, eps_hat, sigma2, x0, xt

z = sp.Symbol("z", real=True)
y = sp.Symbol("y", real=True)  # a value of x_{t−1}
M = sp.Symbol("M", real=True)  # a generic mean (stands for μ_θ(x_t))
S2 = sp.Symbol("S2", positive=True)  # a generic variance (stands for σ_t²)

TEXTBOOK_XT_COEF = 1 / sp.sqrt(alpha)
TEXTBOOK_EPS_COEF = beta / sp.sqrt(1 - alpha_bar)


def build(*, xt_coef=TEXTBOOK_XT_COEF, eps_coef=TEXTBOOK_EPS_COEF) -> Derivation:
    """Build E11.  ``xt_coef``/``eps_coef`` are the claimed coefficients of the update (1/√α_t, β_t/√(1−ᾱ_t))."""
    from . import get

    d = Derivation("sampling_step", "E11", "The sampling step is a draw from p_θ(x_{t−1}|x_t)", "Sampling")
    d.assume("0 < β_t < 1, α_t = 1 − β_t", "0 < ᾱ_t = α_t ᾱ_{t−1} ≤ ᾱ_{t−1} ≤ 1", "σ_t² > 0 (t ≥ 2)")

    po = get("posterior")  # E6
    beta_tilde = po.result("variance").at(beta, alpha_bar_prev)
    mean_x0 = po.result("mean").at(x0, xt, beta, alpha_bar_prev)
    mean_eps = po.result("mean_eps").at(xt, eps, beta, alpha_bar_prev)
    x0_of_eps = po.result("x0_from_eps").at(xt, eps, beta, alpha_bar_prev)
    d.step(
        "Posterior mean in ε form (E6 `mean_eps`): μ̃_t = (x_t − β_t/√(1−ᾱ_t) ε)/√α_t",
        mean_eps,
        "E6's x_0-form mean at x_0 = (x_t − √(1−ᾱ_t) ε)/√ᾱ_t (E6 `x0_from_eps`) gives the same polynomial",
        coefficients_equal(mean_x0.subs(x0, x0_of_eps), mean_eps, [xt, eps], degree=1),
        before=mean_x0,
    )

    mu_theta = mean_eps.subs(eps, eps_hat)
    update_mean = xt_coef * (xt - eps_coef * eps_hat)
    d.step(
        "The update's mean (x_t − β_t/√(1−ᾱ_t) ε_θ)/√α_t is μ̃_t with ε replaced by ε_θ: this is μ_θ(x_t)",
        update_mean,
        "compare the coefficients of x_t and ε_θ",
        coefficients_equal(update_mean, mu_theta, [xt, eps_hat], degree=1),
        before=sp.Symbol(r"\mu_\theta(x_t)"),
    )

    # E2: the update is the reparameterized sample mu + sigma·eps with mu = μ_θ, sigma = √σ², eps = z.
    e2 = get("reparameterization")
    e2_sample = e2.result("sample")
    step_expr = mu_theta + sp.sqrt(sigma2) * z
    as_e2 = e2_sample.at(mu_theta, sp.sqrt(sigma2), z)
    d.step(
        "x_{t−1} = μ_θ + σ_t z is E2's reparameterized sample with mu = μ_θ, sigma = σ_t, eps = z",
        step_expr,
        "E2 `reparameterization` result `sample`",
        holds(
            lambda e: (sp.expand(as_e2 - e) == 0, "E2's sample at (μ_θ, σ_t, z), expanded"), "E2's sample", step_expr
        ),
        before=sp.Symbol("x_{t-1}"),
    )

    phi = normal_pdf(z, 0, 1)
    d.step(
        "Its mean: ∫ (μ + σz) N(z; 0, 1) dz = μ, i.e. E[x_{t−1}|x_t] = μ_θ",
        M,
        "∫ N = 1 and ∫ z N = 0, integrated by SymPy",
        integral_equals(sp.expand((M + sp.sqrt(S2) * z) * phi), z, M),
        before=sp.Integral((M + sp.sqrt(S2) * z) * phi, (z, -sp.oo, sp.oo)),
    )
    d.step(
        "Its variance: ∫ (σz)² N(z; 0, 1) dz = σ², i.e. Var[x_{t−1}|x_t] = σ_t²",
        S2,
        "∫ z² N = 1, integrated by SymPy",
        integral_equals(S2 * z**2 * phi, z, S2),
        before=sp.Integral((sp.sqrt(S2) * z) ** 2 * phi, (z, -sp.oo, sp.oo)),
    )

    density = e2.result("density")
    e2_density = density.at(y, M, sp.sqrt(S2))
    d.step(
        "Its law: the density of μ + σz (E2, change of variables) is N(y; μ, σ²), so x_{t−1} ~ p_θ(x_{t−1}|x_t) "
        "= N(μ_θ, σ_t²)",
        normal_pdf(y, M, S2),
        "E2 `reparameterization` result `density` at sigma = √σ²",
        equal(e2_density, normal_pdf(y, M, S2), method="simplify"),
        before=sp.Symbol(r"p_{\mu+\sigma z}(y)"),
    )

    last = sp.simplify((step_expr - mu_theta).subs(sigma2, beta_tilde).subs(alpha_bar_prev, 1))
    d.step(
        "At t = 1 with σ_1² = β̃_1 (ᾱ_0 = 1) the noise term vanishes: the last step outputs the mean μ_θ(x_1)",
        sp.Integer(0),
        "β̃_1 = (1 − ᾱ_0)/(1 − ᾱ_1) β_1 = 0",
        is_zero(last),
        before=sp.Symbol(r"x_0 - \mu_\theta(x_1)"),
    )

    def variance_choices(rel) -> tuple[bool, str]:
        # both DDPM choices are valid variances (positive for t ≥ 2) and β̃_t < β_t (ratio (1−ᾱ_{t−1})/(1−ᾱ_t) < 1)
        if not isinstance(rel, sp.StrictLessThan):
            return False, f"not a strict upper bound: {rel}"
        k, j = sp.symbols("k j", positive=True)
        sub = {beta: 1 / (1 + k), alpha_bar_prev: 1 / (1 + j)}  # 0 < β_t < 1, 0 < ᾱ_{t−1} < 1
        bt = sp.factor(sp.cancel(rel.lhs.subs(sub)))
        gap = sp.factor(sp.cancel((rel.rhs - rel.lhs).subs(sub)))
        return bt.is_positive is True and gap.is_positive is True, f"β̃_t = {bt} > 0, β_t − β̃_t = {gap} > 0"

    choices = sp.Lt(beta_tilde, beta)
    d.step(
        "Either DDPM variance works: 0 < β̃_t < β_t for t ≥ 2 (the step is an exact draw for whichever σ_t² is chosen)",
        choices,
        "β̃_t = β_t (1−ᾱ_{t−1})/(1−ᾱ_t) and 1 − ᾱ_{t−1} < 1 − ᾱ_t",
        holds(
            variance_choices, "signs on a parameterization of all valid schedules (β = 1/(1+k), ᾱ = 1/(1+j))", choices
        ),
    )

    # exported with each coefficient simplified (the derived sum of fractions is equal but wasteful to evaluate)
    mean_simple = sum(sp.simplify(sp.expand(mu_theta).coeff(g)) * g for g in (xt, eps_hat))
    exported = sp.Tuple(mean_simple, mean_simple + sp.sqrt(sigma2) * z)

    def same_step(forms) -> tuple[bool, str]:
        mean_form, step_form = forms
        ok_mean = coefficients_equal(mean_form, mu_theta, [xt, eps_hat], degree=1).run()[0]
        ok_step = coefficients_equal(step_form, step_expr, [xt, eps_hat, z], degree=1).run()[0]
        noise = sp.expand(step_form).coeff(z)
        ok_law = sp.simplify(noise**2 - sigma2) == 0  # the law N(μ_θ, σ_t²): the noise coefficient squared is σ_t²
        return ok_mean and ok_step and ok_law, f"mean {ok_mean}; step {ok_step}; (coefficient of z)² = {noise**2}"

    d.step(
        "The exported forms, each coefficient simplified: μ_θ and x_{t−1} = μ_θ + √σ_t² z",
        exported,
        "equal to the derived mean and step as polynomials in (x_t, ε_θ, z); the z-coefficient squared is σ_t²",
        holds(same_step, "polynomial identities in (xt, eps_hat, z) and the variance of the noise term", exported),
    )
    d.export("mean", mean_simple, (xt, eps_hat, beta, alpha_bar_prev), "μ_θ")
    d.export(
        "step",
        exported[1],
        (xt, eps_hat, z, beta, alpha_bar_prev, sigma2),
        "x_{t−1} = μ_θ + √σ² z",
    )
    return d

"""E9 -- the ε-parameterization of L_{t-1} and its weight, in schedule form and in SNR form.

Guide section: "Simplified diffusion objective".  With the model mean written like the posterior mean in ε form,

    μ_θ(x_t) = (x_t − β_t/√(1−ᾱ_t) · ε_θ) / √α_t,

the mean difference is μ̃_t − μ_θ = β_t/(√α_t √(1−ᾱ_t)) · (ε_θ − ε), and E8 turns the KL term into

    L_{t−1} − C = β_t² / (2σ_t² α_t (1−ᾱ_t)) · ‖ε − ε_θ‖²    (per dimension, summed over dimensions; nats).

With σ_t² = β̃_t the weight equals ½(SNR(t−1)/SNR(t) − 1), SNR(t) = ᾱ_t/(1−ᾱ_t).  Built on E5 (``sample``),
E6 (``posterior``: ``variance``, ``mean``, ``mean_eps``, ``x0_from_eps``) and E8 (``kl_equal_var``).

Conventions: paper indexing, t = 1..T; ``beta`` = β_t, ``alpha_bar_prev`` = ᾱ_{t−1}, α_t = 1 − β_t,
ᾱ_t = α_t ᾱ_{t−1}; all schedule quantities are declared positive (0 < β_t < 1, 0 < ᾱ_{t−1} ≤ 1).

At t = 1 (ᾱ_0 = 1): β̃_1 = 0 and SNR(0) = ∞, so the weight with σ_1² = β̃_1 is undefined.  That is not a gap:
the t = 1 term of the bound is L_0 = −log p_θ(x_0|x_1), handled by the decoder (a discretized Gaussian on
x_0), not by this weight.  The weights here apply to L_{t−1} for t = 2..T.

Exports (argument order fixed):

- ``weight(beta, alpha_bar_prev, sigma2)``: β_t²/(2σ_t² α_t (1−ᾱ_t)), the factor in front of ‖ε − ε_θ‖².
- ``weight_posterior(beta, alpha_bar_prev)``: the weight at σ_t² = β̃_t, = β_t/(2α_t(1−ᾱ_{t−1})).
- ``weight_snr(snr_prev, snr)``: the same weight from SNR(t−1), SNR(t): ½(SNR(t−1)/SNR(t) − 1).
- ``snr(alpha_bar)``: SNR = ᾱ/(1−ᾱ) (a definition).

Tested in ``tests/test_symbolic_objective.py`` (the weight without its square and the SNR form without its −1
give ✗; the lambdified weights agree on random schedules).
"""

from __future__ import annotations

import sympy as sp

from .core import Derivation, coefficients_equal, holds

beta, alpha_bar_prev, sigma2 = sp.symbols("beta alpha_bar_prev sigma2", positive=True)
snr_s, snr_prev_s, alpha_bar_s = sp.symbols("snr snr_prev alpha_bar", positive=True)
xt, x0, eps, eps_hat = sp.symbols("xt x0 eps eps_hat", real=True)

alpha = 1 - beta
alpha_bar = alpha * alpha_bar_prev
sqrt_alpha_bar = sp.sqrt(alpha) * sp.sqrt(alpha_bar_prev)  # √(α_t ᾱ_{t−1}) split: both factors are positive


def snr_of(ab):
    """SNR(t) = ᾱ_t / (1 − ᾱ_t): signal variance over noise variance of x_t (a definition)."""
    return ab / (1 - ab)


TEXTBOOK_MEAN_COEF = beta / (sp.sqrt(alpha) * sp.sqrt(1 - alpha_bar))
TEXTBOOK_WEIGHT = beta**2 / (2 * sigma2 * alpha * (1 - alpha_bar))
TEXTBOOK_WEIGHT_POSTERIOR = beta / (2 * alpha * (1 - alpha_bar_prev))
TEXTBOOK_WEIGHT_SNR = sp.Rational(1, 2) * (snr_prev_s / snr_s - 1)


def build(
    *,
    mean_coef=TEXTBOOK_MEAN_COEF,
    weight=TEXTBOOK_WEIGHT,
    weight_posterior=TEXTBOOK_WEIGHT_POSTERIOR,
    weight_snr=TEXTBOOK_WEIGHT_SNR,
) -> Derivation:
    """Build E9.  The keyword arguments are the claimed (textbook) forms; tests pass wrong ones and expect ✗."""
    from . import get

    d = Derivation("eps_weight", "E9", "ε-parameterization and its weight", "Simplified diffusion objective")
    d.assume("0 < β_t < 1, α_t = 1 − β_t", "0 < ᾱ_t = α_t ᾱ_{t−1} ≤ ᾱ_{t−1} ≤ 1", "σ_t² > 0", "t ≥ 2 for the weights")
    po = get("posterior")  # E6
    beta_tilde = po.result("variance").at(beta, alpha_bar_prev)
    mean_x0 = po.result("mean").at(x0, xt, beta, alpha_bar_prev)

    # x_0 from (x_t, ε): E6's ``x0_from_eps``, checked against E5's draw x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε.
    x0_of_eps = po.result("x0_from_eps").at(xt, eps, beta, alpha_bar_prev)
    e5 = get("forward_marginal").result("sample")
    ab5 = e5.args[2]
    d.step(
        "x_0 from (x_t, ε) (E6 `x0_from_eps`) inverts the forward draw x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε (E5 `sample`)",
        x0_of_eps,
        "solve the linear relation for x_0; √ᾱ_t = √α_t √ᾱ_{t−1}",
        holds(
            lambda e: (
                sp.cancel(e5.at(e, eps, ab5).subs(sp.sqrt(ab5), sqrt_alpha_bar).subs(ab5, alpha_bar) - xt) == 0,
                "E5's draw at x_0 = (after) gives back x_t",
            ),
            "substitute into E5's draw; cancel",
            x0_of_eps,
        ),
        before=x0,
    )

    mean_eps = po.result("mean_eps").at(xt, eps, beta, alpha_bar_prev)
    d.step(
        "Substitute into the posterior mean (E6, x_0 form): μ̃_t = (x_t − β_t/√(1−ᾱ_t) ε)/√α_t (E6 `mean_eps`)",
        mean_eps,
        "coefficient of x_t: (β_t + α_t(1−ᾱ_{t−1}))/((1−ᾱ_t)√α_t) = 1/√α_t since β_t + α_t − ᾱ_t = 1 − ᾱ_t",
        coefficients_equal(mean_x0.subs(x0, x0_of_eps), mean_eps, [xt, eps], degree=1),
        before=mean_x0,
    )

    mu_theta = mean_eps.subs(eps, eps_hat)
    d.step(
        "With μ_θ = μ̃_t(ε → ε_θ) = (x_t − β_t/√(1−ᾱ_t) ε_θ)/√α_t the mean difference is linear in ε_θ − ε",
        mean_coef * (eps_hat - eps),
        "x_t cancels; the ε coefficients differ only in the sign",
        coefficients_equal(mean_eps - mu_theta, mean_coef * (eps_hat - eps), [xt, eps, eps_hat], degree=1),
        before=sp.Symbol(r"\tilde\mu_t - \mu_\theta"),
    )

    # E8: with equal variances the KL is the squared mean difference over 2σ².
    e8 = get("mean_matching").result("kl_equal_var")
    l_term = e8.at(mean_eps, mu_theta, sigma2)
    weight_derived = sp.factor(sp.simplify(sp.diff(l_term, eps_hat, 2) / 2))
    d.step(
        "Mean matching (E8): L_{t−1} − C = w_t (ε − ε_θ)² with the weight w_t = β_t²/(2σ_t² α_t (1−ᾱ_t))",
        weight_derived,
        "E8 `mean_matching` result `kl_equal_var` at (μ̃_t, μ_θ, σ_t²); square the coefficient of the last step",
        holds(
            lambda e: (
                coefficients_equal(l_term, e * (eps - eps_hat) ** 2, [xt, eps, eps_hat], degree=2).run()[0]
                and sp.cancel(e - weight) == 0,
                "E8's KL == w_t (ε − ε_θ)² as a polynomial in x_t, ε, ε_θ; w_t equals the claimed weight",
            ),
            "polynomial identity in (xt, eps, eps_hat), and the claimed weight",
            weight_derived,
        ),
        before=sp.Symbol(r"L_{t-1} - C"),
        kind="computed",
    )

    weight_post_derived = sp.factor(sp.simplify(weight_derived.subs(sigma2, beta_tilde)))
    d.step(
        "With σ_t² = β̃_t = (1−ᾱ_{t−1})/(1−ᾱ_t) β_t the weight is β_t/(2α_t(1−ᾱ_{t−1}))",
        weight_post_derived,
        "one factor β_t and the factor (1−ᾱ_t) cancel against β̃_t",
        holds(
            lambda e: (
                sp.cancel(weight_derived.subs(sigma2, beta_tilde) - e) == 0 and sp.cancel(e - weight_posterior) == 0,
                "w_t at σ_t² = β̃_t, and the claimed form",
            ),
            "cancel(w_t(β̃_t) − after) == 0 and cancel(after − claim) == 0",
            weight_post_derived,
        ),
        before=weight_derived.subs(sigma2, sp.Symbol(r"\tilde\beta_t")),
        kind="computed",
    )

    # SNR form.  Reparameterize (β_t, ᾱ_{t−1}) -> (ᾱ_t, ᾱ_{t−1}) -> (SNR(t), SNR(t−1)) with ᾱ = SNR/(1 + SNR).
    ab_t = sp.Symbol("alpha_bar_t", positive=True)
    weight_snr_derived = sp.factor(
        sp.simplify(
            weight_post_derived.subs(beta, 1 - ab_t / alpha_bar_prev).subs(
                {ab_t: snr_s / (1 + snr_s), alpha_bar_prev: snr_prev_s / (1 + snr_prev_s)}
            )
        )
    )
    snr_subs = {snr_prev_s: snr_of(alpha_bar_prev), snr_s: snr_of(alpha_bar)}
    d.step(
        "In SNR form (SNR(t) = ᾱ_t/(1−ᾱ_t)): the weight is ½(SNR(t−1)/SNR(t) − 1)",
        weight_snr_derived,
        "SNR(t−1)/SNR(t) − 1 = (1−ᾱ_t)/(α_t(1−ᾱ_{t−1})) − 1 = β_t/(α_t(1−ᾱ_{t−1}))",
        holds(
            lambda e: (
                sp.cancel(weight_post_derived - e.subs(snr_subs)) == 0
                and sp.cancel(weight_post_derived - weight_snr.subs(snr_subs)) == 0,
                "the SNR form at SNR(t−1) = ᾱ_{t−1}/(1−ᾱ_{t−1}), SNR(t) = ᾱ_t/(1−ᾱ_t) is the β̃-weight; so is the claim",
            ),
            "substitute the SNRs back; cancel against the weight at σ_t² = β̃_t",
            weight_snr_derived,
        ),
        before=weight_post_derived,
        kind="computed",
    )

    def t_equals_one(eq) -> tuple[bool, str]:
        var_at_1 = sp.simplify(beta_tilde.subs(alpha_bar_prev, 1))
        snr0 = sp.limit(snr_of(alpha_bar_s), alpha_bar_s, 1, dir="-")
        ok = sp.simplify(var_at_1 - eq.rhs) == 0 and snr0 == sp.oo
        return ok, f"β̃_1 = {var_at_1}; SNR(0) = lim_(ᾱ→1−) ᾱ/(1−ᾱ) = {snr0}"

    at_one = sp.Eq(sp.Symbol(r"\tilde\beta_1"), 0)
    d.step(
        "At t = 1 (ᾱ_0 = 1): β̃_1 = 0 and SNR(0) = ∞, so the weight applies to t = 2..T only; "
        "the t = 1 term is L_0, the decoder's −log p_θ(x_0|x_1)",
        at_one,
        "the posterior of x_0 given (x_1, x_0) is a point mass",
        holds(t_equals_one, "β̃ at ᾱ_{t−1} = 1 and the limit of SNR at ᾱ → 1", at_one),
    )
    fm = get("forward_marginal")
    snr_def = snr_of(alpha_bar_s)
    d.step(
        "SNR(t) = ᾱ_t/(1−ᾱ_t): the signal variance over the noise variance of x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε (E5)",
        snr_def,
        "(coefficient of x_0)² / variance of q(x_t|x_0)",
        holds(
            lambda e: (
                sp.cancel(fm.result("mean").at(1, alpha_bar_s) ** 2 / fm.result("variance").at(alpha_bar_s) - e) == 0,
                "E5's mean coefficient squared over E5's variance",
            ),
            "from E5's mean and variance",
            snr_def,
        ),
        before=sp.Symbol(r"\mathrm{SNR}(t)"),
    )

    d.export("weight", weight_derived, (beta, alpha_bar_prev, sigma2), "weight of (ε − ε_θ)² in L_{t−1} − C")
    d.export("weight_posterior", weight_post_derived, (beta, alpha_bar_prev), "weight at σ_t² = β̃_t")
    d.export("weight_snr", weight_snr_derived, (snr_prev_s, snr_s), "weight at σ_t² = β̃_t from SNR(t−1), SNR(t)")
    d.export("snr", snr_def, (alpha_bar_s,), "SNR = ᾱ/(1 − ᾱ)")
    return d

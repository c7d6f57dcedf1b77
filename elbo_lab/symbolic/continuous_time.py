"""E12 -- the continuous-time limit T → ∞ of the diffusion bound, in SNR form.

Guide section: "Beyond the guide" (Kingma et al., Variational Diffusion Models).  With σ_t² = β̃_t each term of
the bound is (E9) ½(SNR(s)/SNR(t) − 1)·E‖ε − ε̂‖², s = t − 1/T the previous time on [0, 1].  In x_0-form,
‖ε − ε̂‖² = SNR(t)·‖x_0 − x̂_0‖², so each term is

    ½ (SNR(s) − SNR(t)) · E‖x_0 − x̂_0‖²,

and as T → ∞ the sum (a Riemann sum, since T(SNR(t − 1/T) − SNR(t)) → −SNR′(t)) becomes

    L_∞ = −½ ∫_0^1 SNR′(t) E‖x_0 − x̂_0(x_t; t)‖² dt  =  ½ ∫_{SNR(1)}^{SNR(0)} E‖x_0 − x̂_0(v)‖² dv,

the second form by v = SNR(t): for a denoiser that depends on t only through the SNR, the continuous-time bound
depends on the schedule only through its end points SNR(0), SNR(1).

The limit is proven for any schedule (assumptions declared in the derivation): Taylor's theorem for a generic C²
SNR, SNR(t − h) − SNR(t) = −h SNR′(t) + (h²/2) SNR″(ξ), and for the antiderivative of a C¹ integrand g,
∫_{t−h}^{t} g = h g(t) − (h²/2) g′(ξ) (both by SymPy series of generic functions), summed over the T intervals of
width h = 1/T: |L_T − L_∞| ≤ (M₂E/4 + G₁/2)/T = O(1/T) (M₂ ≥ |SNR″|, E ≥ e, G₁ ≥ |g′|).  For a C¹ SNR the mean
value theorem gives the limit without the rate.  The measured convergence (Gaussian MMSE, linear log-SNR schedule,
T = 10, 100, 1000) is kept as a second, numeric check.

Conventions: continuous time t ∈ [0, 1], SNR decreasing (SNR(0) large: nearly clean data; SNR(1) small).
In the DDPM notation t_paper = T·t.  Units: nats per dimension (sum over dimensions for a D-dim x_0).

Exports (argument order fixed):

- ``term_x0_form(snr_prev, snr, err2)``: ½(SNR(s) − SNR(t))·err2, one term of the bound with err2 = ‖x_0 − x̂_0‖².
- ``eps_err2_from_x0(err2, snr)``: SNR·err2 = ‖ε − ε̂‖² for the ε̂ implied by x̂_0 (same x_t).
- ``continuous_integrand(dsnr_dt, err2)``: −½ SNR′(t)·err2, the integrand of L_∞ in t.
- ``snr_integrand(err2)``: ½·err2, the integrand of L_∞ in v = SNR.
- ``gaussian_mmse(snr)``: E(x_0 − E[x_0|x_t])² = 1/(1 + SNR) for x_0 ~ N(0, 1) (the optimal denoiser's error).
- ``gaussian_loss(snr_min, snr_max)``: L_∞ of x_0 ~ N(0, 1) with the optimal denoiser,
  ½ log((1 + SNR_max)/(1 + SNR_min)) nats (the I-MMSE relation).

Tested in ``tests/test_symbolic_objective.py``.
"""

from __future__ import annotations

import math

import mpmath
import sympy as sp

from .core import Derivation, equal, holds, limit_equals

snr_s, snr_prev_s = sp.symbols("snr snr_prev", positive=True)
err2 = sp.Symbol("err2", nonnegative=True)
dsnr_dt = sp.Symbol("dsnr_dt", real=True)
snr_min, snr_max = sp.symbols("snr_min snr_max", positive=True)
x0, x0_hat, eps, eps_hat, xt = sp.symbols("x0 x0_hat eps eps_hat xt", real=True)
t = sp.Symbol("t", positive=True)
T = sp.Symbol("T", positive=True)
v = sp.Symbol("v", positive=True)

# Concrete smooth schedules with the same end points, log SNR from 6 at t = 0 to −6 at t = 1:
# linear log-SNR (VDM's fixed schedule) and a quadratic one.
LOG_SNR_0, LOG_SNR_1 = sp.Integer(6), sp.Integer(-6)
SNR_LINEAR = sp.exp(LOG_SNR_0 + (LOG_SNR_1 - LOG_SNR_0) * t)
SNR_QUADRATIC = sp.exp(LOG_SNR_0 + (LOG_SNR_1 - LOG_SNR_0) * t**2)

HALF = sp.Rational(1, 2)
TEXTBOOK_TERM_X0 = HALF * (snr_prev_s - snr_s) * err2
TEXTBOOK_INTEGRAND = -HALF * dsnr_dt * err2


def build(*, term_x0=TEXTBOOK_TERM_X0, integrand=TEXTBOOK_INTEGRAND) -> Derivation:
    """Build E12. ``term_x0`` (in snr_prev, snr, err2) and ``integrand`` (in dsnr_dt, err2) are claimed forms."""
    from . import get

    d = Derivation("continuous_time", "E12", "Continuous-time limit of the bound", "Beyond the guide")
    d.assume(
        "t ∈ [0, 1], T steps of width h = 1/T, t_i = i/T, s = t_i − h; σ_t² = β̃_t",
        "SNR: [0, 1] → (0, ∞) continuously differentiable (C¹) and decreasing; C² with |SNR″| ≤ M₂ for the O(1/T) rate",
        "e(t) = E‖x_0 − x̂_0(x_t; t)‖² ≥ 0 continuous, |e| ≤ E; g(t) = −½ SNR′(t) e(t) C¹ with |g′| ≤ G₁ for the rate",
    )
    e9 = get("eps_weight")
    w_snr = e9.result("weight_snr")
    weight = w_snr.at(snr_prev_s, snr_s)
    snr_r = e9.result("snr")
    eps_err2 = sp.Symbol(r"\|\epsilon-\hat\epsilon\|^2", nonnegative=True)
    term_eps = HALF * (snr_prev_s / snr_s - 1) * eps_err2
    d.step(
        "With σ_t² = β̃_t, a term of the bound is ½(SNR(s)/SNR(t) − 1)·‖ε − ε̂‖² (s: the previous time step)",
        term_eps,
        "E9 `eps_weight` result `weight_snr`",
        holds(lambda e: (sp.cancel(weight * eps_err2 - e) == 0, "E9's weight times ‖ε − ε̂‖²"), "E9's weight", term_eps),
        before=sp.Symbol(r"L_{s} - C"),
    )

    # ε-error to x0-error.  E5: x_t = √ᾱ x_0 + √(1−ᾱ) ε; the x_0 prediction implied by ε̂ inverts it with ε̂.
    e5 = get("forward_marginal").result("sample")
    a_bar = e5.args[2]
    x_t = e5.at(x0, eps, a_bar)
    (x0_from_eps,) = sp.solve(sp.Eq(e5.at(x0, eps_hat, a_bar), xt), x0)
    x0_pred = x0_from_eps.subs(xt, x_t)
    snr_ab = snr_r.at(a_bar)
    x0_hat_s = sp.Symbol(r"\hat x_0", real=True)
    eps_in_x0 = snr_ab * (x0 - x0_hat_s) ** 2
    d.step(
        "With x_t = √ᾱ x_0 + √(1−ᾱ) ε (E5) and x̂_0 = (x_t − √(1−ᾱ) ε̂)/√ᾱ: (ε − ε̂)² = SNR·(x_0 − x̂_0)²",
        eps_in_x0,
        "x_0 − x̂_0 = √((1−ᾱ)/ᾱ)(ε̂ − ε); SNR = ᾱ/(1−ᾱ) (E9 `snr`)",
        holds(
            lambda e: (sp.cancel((eps - eps_hat) ** 2 - e.subs(x0_hat_s, x0_pred)) == 0, "x̂_0 from ε̂ substituted"),
            "substitute x̂_0(ε̂); cancel against (ε − ε̂)²",
            eps_in_x0,
        ),
        before=(eps - eps_hat) ** 2,
    )
    eps_from_err2 = snr_s * err2
    d.step(
        "In the notation err2 = ‖x_0 − x̂_0‖²: ‖ε − ε̂‖² = SNR(t)·err2",
        eps_from_err2,
        "the previous step with SNR(t) = ᾱ_t/(1 − ᾱ_t)",
        holds(
            lambda e: (
                sp.cancel(e.subs({err2: (x0 - x0_pred) ** 2, snr_s: snr_ab}) - (eps - eps_hat) ** 2) == 0,
                "at err2 = (x_0 − x̂_0)², SNR = ᾱ/(1−ᾱ)",
            ),
            "substitute and cancel",
            eps_from_err2,
        ),
        before=eps_err2,
    )

    term_derived = sp.factor(sp.expand(weight * snr_s * err2))
    d.step(
        "So each term in x_0-form is ½(SNR(s) − SNR(t))·‖x_0 − x̂_0‖²",
        term_derived,
        "substitute ‖ε − ε̂‖² = SNR(t)·‖x_0 − x̂_0‖²; SNR(t) cancels the division",
        holds(
            lambda e: (
                sp.expand(weight * snr_s * err2 - e) == 0 and sp.expand(e - term_x0) == 0,
                f"E9's weight · SNR · err2, and the claimed {term_x0}",
            ),
            "expand against the substituted term and the claim",
            term_derived,
        ),
        before=weight * snr_s * err2,
        kind="computed",
    )

    # ---- the limit T → ∞ for any schedule: Taylor with remainder, then a Riemann sum --------------------------
    f, G = sp.Function("SNR"), sp.Function("G")
    h = sp.Symbol("h", positive=True)
    taylor = -h * sp.Derivative(f(t), t) + h**2 / 2 * sp.Derivative(f(t), (t, 2))
    d.step(
        "Taylor (any C² SNR): SNR(t − h) − SNR(t) = −h SNR′(t) + (h²/2) SNR″(ξ), ξ ∈ (t − h, t); for C¹ SNR the "
        "mean value theorem gives −h SNR′(ξ′)",
        taylor,
        "Taylor's theorem with the Lagrange remainder at second order (first order for C¹)",
        holds(
            lambda e: (
                sp.expand(sp.series(f(t - h) - f(t), h, 0, 3).removeO().doit() - e.doit()) == 0,
                "SymPy's series of SNR(t − h) − SNR(t) in h to order h² for a generic function",
            ),
            "series of a generic function, compared term by term",
            taylor,
        ),
        before=f(t - h) - f(t),
    )
    per_term = -HALF * sp.Derivative(f(t), t) * err2
    d.step(
        "The integrand in t: T·½(SNR(t − 1/T) − SNR(t))·err2 → −½ SNR′(t)·err2 (the leading Taylor term, h = 1/T)",
        integrand,
        "divide the term by h = 1/T; the remainder (h/2) SNR″(ξ)·err2 vanishes as h → 0",
        holds(
            lambda e: (
                sp.expand(sp.series((f(t - h) - f(t)) * HALF * err2 / h, h, 0, 1).removeO().doit() - per_term.doit())
                == 0
                and sp.expand(e.subs(dsnr_dt, sp.Derivative(f(t), t)) - per_term) == 0,
                "leading term of the series of the scaled term; the claimed integrand at dsnr_dt = SNR′(t)",
            ),
            "series of T·term in h = 1/T, compared with the claimed integrand",
            integrand,
        ),
        before=sp.Symbol(r"T\cdot\tfrac12(\mathrm{SNR}(t-1/T)-\mathrm{SNR}(t))\,\mathrm{err2}"),
    )
    riemann_rule = h * sp.Derivative(G(t), t) - h**2 / 2 * sp.Derivative(G(t), (t, 2))
    d.step(
        "Riemann sum (right end points) of a C¹ integrand g = G′: ∫_{t−h}^{t} g = G(t) − G(t − h) = h g(t) − "
        "(h²/2) g′(ξ)",
        riemann_rule,
        "Taylor's theorem for the antiderivative G at second order",
        holds(
            lambda e: (
                sp.expand(sp.series(G(t) - G(t - h), h, 0, 3).removeO().doit() - e.doit()) == 0,
                "series of G(t) − G(t − h) in h to order h²",
            ),
            "series of a generic antiderivative, compared term by term",
            riemann_rule,
        ),
        before=G(t) - G(t - h),
    )
    M2, Emax, G1 = sp.symbols("M_2 E G_1", positive=True)
    Tn = sp.Symbol("T", positive=True, integer=True)
    err_bound = sp.Symbol(r"|L_T - L_\infty|", nonnegative=True)
    rate = sp.Le(err_bound, (M2 * Emax / 4 + G1 / 2) / Tn)

    def total_error(rel) -> tuple[bool, str]:
        # per interval: the SNR remainder ½·(h²/2)·|SNR″|·e ≤ h² M₂ E/4, the Riemann remainder (h²/2)|g′| ≤ h² G₁/2;
        # T intervals of width h = 1/T.
        if not isinstance(rel, sp.LessThan) or rel.lhs != err_bound:
            return False, f"not an upper bound on {err_bound}: {rel}"
        per_interval = HALF * h**2 / 2 * M2 * Emax + h**2 / 2 * G1
        total = sp.simplify((Tn * per_interval).subs(h, 1 / Tn))
        ok = sp.simplify(total - rel.rhs) == 0 and sp.limit(rel.rhs, Tn, sp.oo) == 0
        return ok, f"T·(remainders at h = 1/T) = {total} → 0 as T → ∞"

    d.step(
        "Hence |Σ_i ½(SNR(t_i − 1/T) − SNR(t_i))·e(t_i) − ∫_0^1 −½ SNR′(t) e(t) dt| ≤ (M₂E/4 + G₁/2)/T = O(1/T)",
        rate,
        "triangle inequality over the T intervals: the SNR remainder ½·(h²/2)|SNR″|·e plus the Riemann remainder",
        holds(total_error, "sum of the two per-interval remainders over T intervals, h = 1/T; → 0", rate),
    )

    # Second check, numeric: Gaussian-data MMSE e(t) = 1/(1 + SNR(t)) on the linear log-SNR schedule.
    snr_lin_prime = sp.diff(SNR_LINEAR, t)
    scaled = T * (SNR_LINEAR.subs(t, t - 1 / T) - SNR_LINEAR)
    d.step(
        "Worked example: T·(SNR(t − 1/T) − SNR(t)) → −SNR′(t)",
        -snr_lin_prime,
        "the backward difference quotient of a differentiable SNR tends to its derivative",
        limit_equals(scaled, T, sp.oo, -snr_lin_prime),
        before=sp.Limit(scaled, T, sp.oo),
        scope="linear log-SNR schedule, log SNR 6 → −6",
    )
    mmse_of_snr = _gaussian_mmse(snr_ab, a_bar)
    e_of_t = mmse_of_snr.subs(snr_s, SNR_LINEAR)
    snr_f = sp.lambdify(t, SNR_LINEAR, "mpmath")
    e_f = sp.lambdify(t, e_of_t, "mpmath")
    snr_prime_s = sp.Symbol("SNR'(t)")
    limit_integral = sp.Integral(integrand.subs(dsnr_dt, snr_prime_s), (t, 0, 1))

    def riemann(claimed) -> tuple[bool, str]:
        f_int = sp.lambdify(t, claimed.function.subs({snr_prime_s: snr_lin_prime, err2: e_of_t}), "mpmath")
        exact = float(mpmath.quad(f_int, [0, 1]))
        errors = []
        for n in (10, 100, 1000):
            total = math.fsum(float(0.5 * (snr_f((i - 1) / n) - snr_f(i / n)) * e_f(i / n)) for i in range(1, n + 1))
            errors.append(abs(total - exact))
        ok = errors[1] < errors[0] / 5 and errors[2] < errors[1] / 5 and errors[2] < 1e-2 * abs(exact)
        return ok, "|sum_T − integral| at T = 10, 100, 1000: " + ", ".join(f"{e:.2e}" for e in errors)

    d.step(
        "Numeric check of L_T → −½ ∫_0^1 SNR′(t) E‖x_0 − x̂_0‖² dt: the error shrinks like 1/T",
        limit_integral,
        "finite sums at T = 10, 100, 1000 against mpmath quadrature of the integral",
        holds(riemann, "measured |L_T − L_∞| at T = 10, 100, 1000 (Gaussian MMSE)", limit_integral),
        before=sp.Symbol(r"\lim_{T\to\infty} L_T"),
        scope="x_0 ~ N(0, 1), optimal denoiser, linear log-SNR schedule",
    )

    # Change of variables v = SNR(t), for any differentiable SNR and error g(v) (Leibniz rule).
    gfun = sp.Function("g")
    antiderivative = sp.Integral(gfun(v), (v, sp.Symbol("c"), f(t)))
    chain = gfun(f(t)) * sp.Derivative(f(t), t)
    d.step(
        "Substitute v = SNR(t): −½∫_0^1 SNR′(t) g(SNR(t)) dt = ½∫_{SNR(1)}^{SNR(0)} g(v) dv",
        chain,
        "d/dt ∫_c^{SNR(t)} g(v) dv = g(SNR(t)) SNR′(t), so both sides equal ½(G(SNR(0)) − G(SNR(1)))",
        holds(
            lambda e: (sp.simplify(sp.diff(antiderivative, t) - e.doit()) == 0, "Leibniz rule"),
            "differentiate the integral with a variable limit",
            chain,
        ),
        before=sp.Derivative(antiderivative, t),
    )
    in_v = HALF * err2
    d.step(
        "The integrand in v = SNR: ½·err2 (dv = SNR′(t) dt; the orientation flips since SNR decreases)",
        in_v,
        "−½ SNR′(t)·err2 dt = −½ err2 dv over [SNR(0) → SNR(1)] = ½ err2 dv over [SNR(1), SNR(0)]",
        holds(
            lambda e: (sp.simplify(-integrand / dsnr_dt - e) == 0, "−(integrand in t)/SNR′(t)"),
            "divide by dv/dt, flip the orientation",
            in_v,
        ),
        before=integrand,
    )

    # Schedule independence, concretely: two schedules, same end points, two denoiser errors.
    errors_of_v = {"constant error 1": sp.Integer(1), "Gaussian MMSE 1/(1+v)": mmse_of_snr.subs(snr_s, v)}
    snr1_s, snr0_s = sp.Symbol(r"\mathrm{SNR}(1)"), sp.Symbol(r"\mathrm{SNR}(0)")
    ends = HALF * sp.Integral(gfun(v), (v, snr1_s, snr0_s))

    def endpoints_only(claimed) -> tuple[bool, str]:
        out, ok = [], True
        for label, gv in errors_of_v.items():
            at = claimed.replace(gfun, sp.Lambda(v, gv)).subs({snr1_s: sp.exp(LOG_SNR_1), snr0_s: sp.exp(LOG_SNR_0)})
            in_v = at.doit()
            for schedule in (SNR_LINEAR, SNR_QUADRATIC):
                in_t = sp.integrate(
                    integrand.subs({dsnr_dt: sp.diff(schedule, t), err2: gv.subs(v, schedule)}), (t, 0, 1)
                )
                ok &= not in_t.has(sp.Integral) and sp.simplify(sp.expand_log(in_t - in_v, force=True)) == 0
            out.append(f"{label}: {sp.N(in_v, 6)}")
        return ok, "both schedules give the v-integral; " + "; ".join(out)

    d.step(
        "The bound depends on the schedule only through SNR(0), SNR(1): linear and quadratic log-SNR schedules "
        "(same end points) give the same value",
        ends,
        "integrate in t for each schedule and in v once, for a constant error and for the Gaussian MMSE",
        holds(endpoints_only, "∫ dt for two schedules == ∫ dv", ends),
        before=sp.Integral(-HALF * sp.Derivative(f(t), t) * gfun(f(t)), (t, 0, 1)),
        scope="log SNR 6 → −6, linear and quadratic; e = 1 and e = 1/(1 + v)",
    )

    d.step(
        "Gaussian data x_0 ~ N(0, 1): the optimal denoiser E[x_0|x_t] has error E(x_0 − E[x_0|x_t])² = 1/(1 + SNR)",
        mmse_of_snr,
        "Var(x_0|x_t) = Var x_0 − Cov(x_0, x_t)²/Var x_t = 1 − ᾱ with ᾱ = SNR/(1 + SNR)",
        holds(
            lambda e: (
                sp.cancel(_gaussian_mmse(snr_ab, a_bar) - e) == 0 and sp.cancel(e - 1 / (1 + snr_s)) == 0,
                "Gaussian conditioning recomputed; equal to 1/(1 + SNR)",
            ),
            "recompute the conditional variance; cancel",
            mmse_of_snr,
        ),
        before=sp.Symbol(r"\mathrm{mmse}(\mathrm{SNR})"),
        scope="x_0 ~ N(0, 1)",
        kind="computed",
    )
    loss = HALF * sp.expand_log(sp.integrate(mmse_of_snr.subs(snr_s, v), (v, snr_min, snr_max)), force=True)
    d.step(
        "so its continuous-time bound is L_∞ = ½ log((1 + SNR_max)/(1 + SNR_min)) (the I-MMSE relation)",
        loss,
        "integrate ½/(1 + v) from SNR_min to SNR_max",
        equal(loss, HALF * sp.log((1 + snr_max) / (1 + snr_min)), method="expand_log"),
        before=HALF * sp.Integral(1 / (1 + v), (v, snr_min, snr_max)),
        scope="x_0 ~ N(0, 1)",
        kind="computed",
    )

    d.export("term_x0_form", term_derived, (snr_prev_s, snr_s, err2), "½(SNR(s) − SNR(t))·‖x0 − x̂0‖², nats")
    d.export("eps_err2_from_x0", eps_from_err2, (err2, snr_s), "‖ε − ε̂‖² = SNR·‖x0 − x̂0‖²")
    d.export("continuous_integrand", integrand, (dsnr_dt, err2), "−½ SNR′(t)·err2, nats per unit time")
    d.export("snr_integrand", in_v, (err2,), "½·err2, nats per unit SNR")
    d.export("gaussian_mmse", mmse_of_snr, (snr_s,), "MMSE of x0 ~ N(0, 1) at this SNR")
    d.export("gaussian_loss", loss, (snr_min, snr_max), "L_∞ for x0 ~ N(0, 1), optimal denoiser, nats")
    return d


def _gaussian_mmse(snr_ab: sp.Expr, a_bar: sp.Symbol) -> sp.Expr:
    """Var(x_0 | x_t) for x_0 ~ N(0, 1), x_t = √ᾱ x_0 + √(1−ᾱ) ε, as a function of the SNR.

    Gaussian conditioning: Var x_0 − Cov(x_0, x_t)²/Var x_t with Var x_t = ᾱ + (1 − ᾱ) = 1, Cov = √ᾱ; then
    ᾱ = SNR/(1 + SNR) (solving SNR = ᾱ/(1−ᾱ) for ᾱ).
    """
    var_xt = a_bar + (1 - a_bar)
    cov = sp.sqrt(a_bar)
    mmse_ab = 1 - cov**2 / var_xt
    (a_of_snr,) = sp.solve(sp.Eq(snr_ab, snr_s), a_bar)
    return sp.factor(sp.simplify(mmse_ab.subs(a_bar, a_of_snr)))

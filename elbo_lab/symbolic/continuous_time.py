"""E12 -- the continuous-time limit T → ∞ of the diffusion bound, in SNR form.

Guide section: "Beyond the guide" (Kingma et al., Variational Diffusion Models).  With σ_t² = β̃_t each term of
the bound is (E9) ½(SNR(s)/SNR(t) − 1)·E‖ε − ε̂‖², s = t − 1/T the previous time on [0, 1].  In x_0-form,
‖ε − ε̂‖² = SNR(t)·‖x_0 − x̂_0‖², so each term is

    ½ (SNR(s) − SNR(t)) · E‖x_0 − x̂_0‖²,

and as T → ∞ the sum (a Riemann sum, since T(SNR(t − 1/T) − SNR(t)) → −SNR′(t)) becomes

    L_∞ = −½ ∫_0^1 SNR′(t) E‖x_0 − x̂_0(x_t; t)‖² dt  =  ½ ∫_{SNR(1)}^{SNR(0)} E‖x_0 − x̂_0(v)‖² dv,

the second form by v = SNR(t): for a denoiser that depends on t only through the SNR, the continuous-time bound
depends on the schedule only through its end points SNR(0), SNR(1).

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
    e9 = get("eps_weight")
    w_snr = e9.result("weight_snr")
    weight = w_snr.at(snr_prev_s, snr_s)
    snr_r = e9.result("snr")
    eps_err2 = sp.Symbol(r"\|\epsilon-\hat\epsilon\|^2", nonnegative=True)
    d.step(
        "With σ_t² = β̃_t, a term of the bound is ½(SNR(s)/SNR(t) − 1)·‖ε − ε̂‖² (s: the previous time step)",
        HALF * (snr_prev_s / snr_s - 1) * eps_err2,
        "E9 `eps_weight` result `weight_snr`",
        equal(weight * eps_err2, HALF * (snr_prev_s / snr_s - 1) * eps_err2, method="cancel"),
        before=sp.Symbol(r"L_{s} - C"),
    )

    # ε-error to x0-error.  E5: x_t = √ᾱ x_0 + √(1−ᾱ) ε; the x_0 prediction implied by ε̂ inverts it with ε̂.
    e5 = get("forward_marginal").result("sample")
    a_bar = e5.args[2]
    x_t = e5.at(x0, eps, a_bar)
    (x0_from_eps,) = sp.solve(sp.Eq(e5.at(x0, eps_hat, a_bar), xt), x0)
    x0_pred = x0_from_eps.subs(xt, x_t)
    snr_ab = snr_r.at(a_bar)
    d.step(
        "With x_t = √ᾱ x_0 + √(1−ᾱ) ε (E5) and x̂_0 = (x_t − √(1−ᾱ) ε̂)/√ᾱ: (ε − ε̂)² = SNR·(x_0 − x̂_0)²",
        snr_ab * (x0 - sp.Symbol(r"\hat x_0")) ** 2,
        "x_0 − x̂_0 = √((1−ᾱ)/ᾱ)(ε̂ − ε); SNR = ᾱ/(1−ᾱ) (E9 `snr`)",
        equal((eps - eps_hat) ** 2, snr_ab * (x0 - x0_pred) ** 2, method="cancel"),
        before=(eps - eps_hat) ** 2,
    )

    term_derived = sp.factor(sp.expand(weight * snr_s * err2))
    d.step(
        "So each term in x_0-form is ½(SNR(s) − SNR(t))·‖x_0 − x̂_0‖²",
        term_x0,
        "substitute ‖ε − ε̂‖² = SNR(t)·‖x_0 − x̂_0‖²; SNR(t) cancels the division",
        equal(weight * snr_s * err2, term_x0, method="expand"),
        before=weight * snr_s * err2,
    )

    # Per-term limit, s = t − 1/T: T·(SNR(t − 1/T) − SNR(t)) → −SNR′(t) (concrete smooth schedule).
    snr_lin_prime = sp.diff(SNR_LINEAR, t)
    scaled = T * (SNR_LINEAR.subs(t, t - 1 / T) - SNR_LINEAR)
    d.step(
        "Per-term limit (linear log-SNR schedule, log SNR: 6 → −6): T·(SNR(t − 1/T) − SNR(t)) → −SNR′(t)",
        -snr_lin_prime,
        "the backward difference quotient of a differentiable SNR tends to its derivative",
        limit_equals(scaled, T, sp.oo, -snr_lin_prime),
        before=sp.Limit(scaled, T, sp.oo),
    )

    # Riemann sum: Σ_i ½(SNR(t_i − 1/T) − SNR(t_i)) e(t_i) = Σ_i (1/T)·[½ T(...)] e(t_i) → ∫_0^1 −½ SNR′ e dt.
    # Proven by SymPy on a case it can sum in closed form -- SNR(t) = exp(−3t), e(t) = t: with r = exp(−3/T) the
    # sum is Σ_i ½(r^{i−1} − r^i)·i/T (summation), whose T → ∞ limit (limit) equals the integral (integrate).
    # Also measured for the Gaussian-data MMSE e(t) = 1/(1 + SNR(t)) on the linear log-SNR schedule: the error of
    # the finite sum against the integral (mpmath quadrature) shrinks like 1/T at T = 10, 100, 1000.
    mmse_of_snr = _gaussian_mmse(snr_ab, a_bar)
    e_of_t = mmse_of_snr.subs(snr_s, SNR_LINEAR)
    snr_f = sp.lambdify(t, SNR_LINEAR, "mpmath")
    integrand_f = sp.lambdify(t, integrand.subs({dsnr_dt: snr_lin_prime, err2: e_of_t}), "mpmath")
    e_f = sp.lambdify(t, e_of_t, "mpmath")

    def riemann() -> tuple[bool, str]:
        Tn = sp.Symbol("T", positive=True, integer=True)
        i, r = sp.Symbol("i", positive=True, integer=True), sp.Symbol("r", positive=True)
        rate = sp.Integer(3)
        finite = sp.summation(sp.Rational(1, 2) * (r ** (i - 1) - r**i) * i / Tn, (i, 1, Tn))
        finite = sp.simplify(finite.subs(r, sp.exp(-rate / Tn)))
        lim = sp.limit(finite, Tn, sp.oo)
        target = sp.integrate(-sp.Rational(1, 2) * sp.diff(sp.exp(-rate * t), t) * t, (t, 0, 1))
        symbolic_ok = sp.simplify(lim - target) == 0
        exact = float(mpmath.quad(integrand_f, [0, 1]))
        errors = []
        for n in (10, 100, 1000):
            total = math.fsum(float(0.5 * (snr_f((i - 1) / n) - snr_f(i / n)) * e_f(i / n)) for i in range(1, n + 1))
            errors.append(abs(total - exact))
        numeric_ok = errors[1] < errors[0] / 5 and errors[2] < errors[1] / 5 and errors[2] < 1e-2 * abs(exact)
        return symbolic_ok and numeric_ok, (
            f"SNR = e^(-3t), e = t: lim sum = {sp.simplify(lim)} = integral; Gaussian MMSE, linear log-SNR: "
            + "|sum_T − integral| at T = 10, 100, 1000: "
            + ", ".join(f"{e:.2e}" for e in errors)
        )

    d.step(
        "Summing over the T steps gives a Riemann sum: as T → ∞, L → −½ ∫_0^1 SNR′(t) E‖x_0 − x̂_0‖² dt",
        sp.Integral(integrand.subs(dsnr_dt, sp.Symbol("SNR'(t)")), (t, 0, 1)),
        "each term is (1/T)·[½T(SNR(t − 1/T) − SNR(t))]·err2(t) and the bracket → −½SNR′(t)·err2(t)",
        holds(riemann, "summation + limit = integrate (SNR = e^(-3t), e = t); measured 1/T convergence (MMSE)"),
        before=sp.Symbol(r"\lim_{T\to\infty} \sum_i \tfrac12(\mathrm{SNR}(t_i - 1/T) - \mathrm{SNR}(t_i))\,e(t_i)"),
    )

    # Change of variables v = SNR(t), for any differentiable SNR and error g(v) (Leibniz rule).
    f, g = sp.Function("SNR"), sp.Function("g")
    antiderivative = sp.Integral(g(v), (v, sp.Symbol("c"), f(t)))
    d.step(
        "Substitute v = SNR(t): −½∫_0^1 SNR′(t) g(SNR(t)) dt = ½∫_{SNR(1)}^{SNR(0)} g(v) dv",
        g(f(t)) * sp.Derivative(f(t), t),
        "d/dt ∫_c^{SNR(t)} g(v) dv = g(SNR(t)) SNR′(t), so both sides equal ½(G(SNR(0)) − G(SNR(1)))",
        equal(sp.diff(antiderivative, t), g(f(t)) * sp.diff(f(t), t)),
        before=sp.Derivative(antiderivative, t),
    )

    # Schedule independence, concretely: two schedules, same end points, two denoiser errors.
    errors_of_v = {"constant error 1": sp.Integer(1), "Gaussian MMSE 1/(1+v)": mmse_of_snr.subs(snr_s, v)}

    def endpoints_only() -> tuple[bool, str]:
        out, ok = [], True
        for label, gv in errors_of_v.items():
            in_v = sp.integrate(HALF * gv, (v, sp.exp(LOG_SNR_1), sp.exp(LOG_SNR_0)))
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
        HALF * sp.Integral(g(v), (v, sp.Symbol(r"\mathrm{SNR}(1)"), sp.Symbol(r"\mathrm{SNR}(0)"))),
        "integrate in t for each schedule and in v once, for a constant error and for the Gaussian MMSE",
        holds(endpoints_only, "∫ dt for two schedules == ∫ dv"),
        before=sp.Integral(-HALF * sp.Derivative(f(t), t) * g(f(t)), (t, 0, 1)),
    )

    d.step(
        "Gaussian data x_0 ~ N(0, 1): the optimal denoiser E[x_0|x_t] has error E(x_0 − E[x_0|x_t])² = 1/(1 + SNR)",
        1 / (1 + snr_s),
        "Var(x_0|x_t) = Var x_0 − Cov(x_0, x_t)²/Var x_t = 1 − ᾱ with ᾱ = SNR/(1 + SNR)",
        equal(mmse_of_snr, 1 / (1 + snr_s), method="cancel"),
        before=sp.Symbol(r"\mathrm{mmse}(\mathrm{SNR})"),
    )
    loss = HALF * sp.expand_log(sp.integrate(mmse_of_snr.subs(snr_s, v), (v, snr_min, snr_max)), force=True)
    d.step(
        "so its continuous-time bound is L_∞ = ½ log((1 + SNR_max)/(1 + SNR_min)) (the I-MMSE relation)",
        loss,
        "integrate ½/(1 + v) from SNR_min to SNR_max",
        equal(loss, HALF * sp.log((1 + snr_max) / (1 + snr_min)), method="expand_log"),
        before=HALF * sp.Integral(1 / (1 + v), (v, snr_min, snr_max)),
    )

    d.export("term_x0_form", term_derived, (snr_prev_s, snr_s, err2), "½(SNR(s) − SNR(t))·‖x0 − x̂0‖², nats")
    d.export("eps_err2_from_x0", snr_s * err2, (err2, snr_s), "‖ε − ε̂‖² = SNR·‖x0 − x̂0‖²")
    d.export("continuous_integrand", integrand, (dsnr_dt, err2), "−½ SNR′(t)·err2, nats per unit time")
    d.export("snr_integrand", HALF * err2, (err2,), "½·err2, nats per unit SNR")
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

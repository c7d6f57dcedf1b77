"""E10 -- L_simple: the ε-form of the bound with the weights dropped; what changes and what does not.

Guide section: "Simplified diffusion objective".  By E9 the bound's terms are L_{t−1} − C_t = w_t E‖ε − ε_θ‖²
(t = 2..T, paper indexing).  DDPM trains on

    L_simple = Σ_t E‖ε − ε_θ(x_t, t)‖²  =  T · E_{t∼U{1..T}} E‖ε − ε_θ(x_t, t)‖²,

the same sum with every w_t replaced by 1 (uniform t; the t = 1 term takes the place of the decoder term L_0).

What does not change: for each t, the minimiser over a free prediction ε̂ (a function of x_t) is the
conditional mean E[ε | x_t], whatever the weight w_t > 0; with one free ε̂_t per step, the weighted and the
unweighted sums have the same minimiser.  What changes: the weights are far from constant (shown exactly for a
linear schedule with T = 10), so L_simple is not a positive multiple of the bound -- it is *not* a bound on
−log p -- and with a shared network the trade-off between timesteps (the size of each step's gradient) changes.

Exports (argument order fixed; per dimension, summed over dimensions; nats for the weighted term, the simple
term is unitless squared noise error):

- ``weighted_term(w, eps, eps_hat)``: w (ε − ε̂)², the bound's term L_{t−1} − C_t for one draw (w = E9 weight).
- ``simple_term(eps, eps_hat)``: (ε − ε̂)², the L_simple term (w = 1).
- ``expected_term(w, m, v, eps_hat)``: E[w (ε − ε̂)² | x_t] = w (v + (m − ε̂)²), m = E[ε|x_t], v = Var[ε|x_t].

Tested in ``tests/test_symbolic_objective.py``.
"""

from __future__ import annotations

import sympy as sp

from .algebra import expect_moments
from .core import Derivation, holds

w = sp.Symbol("w", positive=True)
v = sp.Symbol("v", positive=True)  # Var[ε | x_t]
m, eps, eps_hat = sp.symbols("m eps eps_hat", real=True)  # m = E[ε | x_t]

TEXTBOOK_EXPECTED = v + (m - eps_hat) ** 2
TEXTBOOK_MINIMISER = m

T_EXAMPLE = 10
BETA_1, BETA_T = sp.Rational(1, 10_000), sp.Rational(2, 100)  # DDPM's linear end points, exact


def linear_schedule(T: int, beta_1=BETA_1, beta_T=BETA_T) -> tuple[list[sp.Rational], list[sp.Rational]]:
    """Exact linear schedule: (β_1..β_T, ᾱ_0..ᾱ_T) as rationals, ᾱ_0 = 1 (paper indexing)."""
    betas = [beta_1 + (beta_T - beta_1) * sp.Rational(t - 1, T - 1) for t in range(1, T + 1)]
    alpha_bars = [sp.Integer(1)]
    for b in betas:
        alpha_bars.append(alpha_bars[-1] * (1 - b))
    return betas, alpha_bars


def build(*, expected=TEXTBOOK_EXPECTED, minimiser=TEXTBOOK_MINIMISER) -> Derivation:
    """Build E10. ``expected`` (in v, m, eps_hat) and ``minimiser`` (in m) are the claimed forms."""
    from . import get

    d = Derivation("simple_loss", "E10", "L_simple: the weights dropped", "Simplified diffusion objective")
    d.assume("0 < β_t < 1, 0 < ᾱ_{t−1} < 1 (t ≥ 2)", "σ_t² > 0", "Var[ε|x_t] = v > 0")
    e9 = get("eps_weight")
    weight = e9.result("weight")
    b_s, abp_s, s2_s = weight.args

    # 1. The bound's weights are positive on every valid schedule.  Parameterize 0 < β < 1 and 0 < ᾱ_{t−1} < 1
    #    by β = 1/(1 + k), ᾱ_{t−1} = 1/(1 + j) with k, j > 0: the weight becomes a rational function whose
    #    factors SymPy can sign.
    k, j = sp.symbols("k j", positive=True)
    w_kj = sp.factor(sp.cancel(weight.expr.subs({b_s: 1 / (1 + k), abp_s: 1 / (1 + j)})))
    weighted = w * (eps - eps_hat) ** 2
    d.step(
        "The bound's ε term (E9): L_{t−1} − C_t = w_t (ε − ε_θ)² with w_t = β_t²/(2σ_t² α_t(1−ᾱ_t)) > 0",
        weighted,
        "E9 `eps_weight` result `weight`; positive for 0 < β_t < 1, 0 < ᾱ_{t−1} < 1, σ_t² > 0",
        holds(
            lambda e: (
                w_kj.is_positive is True
                and sp.cancel(e.subs(w, weight.expr) - weight.expr * (eps - eps_hat) ** 2) == 0,
                f"w(β = 1/(1+k), ᾱ_(t−1) = 1/(1+j)) = {w_kj}, positive for k, j > 0; the term is w_t (ε − ε_θ)²",
            ),
            "sign of the E9 weight on a parameterization of all valid schedules; the term at w_t = E9's weight",
            weighted,
        ),
        before=sp.Symbol(r"L_{t-1} - C_t"),
    )

    simple = weighted.subs(w, 1)
    d.step(
        "L_simple drops the weights: its per-step term is (ε − ε_θ)² = (L_{t−1} − C_t)/w_t",
        simple,
        "set w_t = 1 for every t (and sample t uniformly)",
        holds(lambda e: (sp.expand(e * w - weighted) == 0, "w_t · (after) == L_{t−1} − C_t"), "multiply back", simple),
        before=sp.Symbol(r"\ell_{\mathrm{simple},t}"),
    )

    # 2. Expected term given x_t: ε̂ = ε_θ(x_t, t) is fixed, ε has conditional mean m and variance v.
    moments = {0: sp.Integer(1), 1: m, 2: v + m**2}  # E[ε^k | x_t]
    expected_derived = expect_moments(weighted, eps, moments)
    d.step(
        "Given x_t: E[w (ε − ε̂)² | x_t] = w (Var[ε|x_t] + (E[ε|x_t] − ε̂)²)",
        expected_derived,
        "expand the square; linearity of E with E[ε|x_t] = m, E[ε²|x_t] = v + m²",
        holds(
            lambda e: (
                sp.expand(expect_moments(weighted, eps, moments) - e) == 0 and sp.expand(e - w * expected) == 0,
                f"E over ε from its moments; the claimed w·({expected})",
            ),
            "expectation from the moments, compared with the claim",
            expected_derived,
        ),
        before=sp.Symbol(r"\mathbb{E}[w(\epsilon-\hat\epsilon)^2\mid x_t]"),
        kind="computed",
    )

    def same_minimiser(eq) -> tuple[bool, str]:
        minimiser = eq.rhs
        crit = sp.solve(sp.diff(expected_derived, eps_hat), eps_hat)
        crit_simple = sp.solve(sp.diff(expected_derived.subs(w, 1), eps_hat), eps_hat)
        curvature = sp.diff(expected_derived, eps_hat, 2)
        ok = (
            len(crit) == 1
            and sp.simplify(crit[0] - minimiser) == 0
            and crit == crit_simple
            and sp.diff(crit[0], w) == 0
            and curvature.is_positive is True
        )
        return ok, f"critical point {crit} (weighted), {crit_simple} (w = 1); curvature {curvature} > 0"

    minimum = sp.Eq(sp.Symbol(r"\hat\epsilon^*"), minimiser)
    d.step(
        "Per step, the minimiser over ε̂ is the conditional mean E[ε|x_t], with or without the weight",
        minimum,
        "d/dε̂ w(v + (m − ε̂)²) = 2w(ε̂ − m) vanishes at ε̂ = m for every w > 0; the curvature 2w is positive",
        holds(same_minimiser, "solve the stationarity condition, weighted and unweighted", minimum),
    )

    # 3. With one free ε̂_t per step (unlimited capacity) the whole sum is minimised term by term.
    n = 3
    ws = sp.symbols(f"w_1:{n + 1}", positive=True)
    ms = sp.symbols(f"m_1:{n + 1}", real=True)
    vs = sp.symbols(f"v_1:{n + 1}", positive=True)
    es = sp.symbols(f"epsh_1:{n + 1}", real=True)
    total = sum(expected_derived.subs({w: a, m: b, v: c, eps_hat: e}) for a, b, c, e in zip(ws, ms, vs, es))

    def sum_minimiser(claim) -> tuple[bool, str]:
        sol = sp.solve([sp.diff(total, e) for e in es], es, dict=True)
        sol1 = sp.solve([sp.diff(total.subs(dict.fromkeys(ws, 1)), e) for e in es], es, dict=True)
        ok = sol == sol1 == [dict(zip(es, list(claim)))]
        return ok, f"weighted: {sol}; unweighted: {sol1}"

    minimisers = sp.Matrix(ms)
    d.step(
        "With a free prediction per step, Σ_t w_t E_t and Σ_t E_t have the same minimiser ε̂_t = m_t",
        minimisers,
        "the sum separates: ε̂_t appears only in its own term",
        holds(sum_minimiser, "solve the joint stationarity conditions for weighted and unit weights", minimisers),
        before=sp.Matrix(es),
        scope=f"T = {n}",
        kind="computed",
    )

    # 4. What changes: gradients are rescaled per step, and the weights are far from constant.
    d.step(
        "A step's gradient is rescaled by w_t: its direction is unchanged, the balance between steps is not",
        rescaled := w * sp.diff(simple, eps_hat),
        "w_t is a constant factor of step t's term",
        holds(
            lambda e: (sp.expand(sp.diff(weighted, eps_hat) - e) == 0, "d/dε̂ of the weighted term, expanded"),
            "differentiate the weighted term; compare",
            rescaled,
        ),
        before=sp.diff(weighted, eps_hat),
    )

    betas, alpha_bars = linear_schedule(T_EXAMPLE)
    weight_post = e9.result("weight_posterior")
    # t = 2..T (t = 1 is L_0, handled by the decoder; β̃_1 = 0)
    w_exact = [weight_post.at(betas[t - 1], alpha_bars[t - 1]) for t in range(2, T_EXAMPLE + 1)]
    c = sp.Symbol("c", positive=True)

    def not_proportional(shown) -> tuple[bool, str]:
        if len(shown) != len(w_exact) or any(abs(a - b) > sp.Rational(1, 1000) * b for a, b in zip(shown, w_exact)):
            return False, "the displayed weights are not the exact ones to 4 digits"
        rational = all(isinstance(x, sp.Rational) for x in w_exact)
        no_c = sp.solve([c * x - 1 for x in w_exact], c) == []
        ratio = max(w_exact) / min(w_exact)
        return rational and no_c and ratio > 1, (
            f"w_2 = {sp.N(w_exact[0], 5)}, w_{T_EXAMPLE} = {sp.N(w_exact[-1], 5)}, max/min = {sp.N(ratio, 5)}; "
            "no c with c·w_t = 1 for all t"
        )

    d.step(
        f"For the linear schedule (β from 1e-4 to 0.02, T = {T_EXAMPLE}, exact rationals) the weights w_t at "
        "σ_t² = β̃_t are not constant, so L_simple is not a positive multiple of the bound: it is not a bound on −log p",
        shown := sp.Matrix([sp.N(x, 4) for x in w_exact]).T,
        "E9 `weight_posterior` at each t = 2..T; the system c·w_t = 1 (all t) has no solution",
        holds(not_proportional, "displayed = exact weights (4 digits); solve c·w_t = 1 for all t", shown),
        before=sp.Symbol(r"(w_2, \dots, w_T)"),
        scope=f"linear schedule, T = {T_EXAMPLE}",
    )

    d.export("weighted_term", weighted, (w, eps, eps_hat), "w (ε − ε̂)²: the bound's term L_{t−1} − C_t, nats")
    d.export("simple_term", simple, (eps, eps_hat), "(ε − ε̂)²: the L_simple term")
    d.export("expected_term", expected_derived, (w, m, v, eps_hat), "E[w (ε − ε̂)² | x_t] = w (v + (m − ε̂)²)")
    return d

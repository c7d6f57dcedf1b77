"""E7 -- the diffusion ELBO as an exact telescoping identity for every T, with T = 3 and T = 4 as worked examples.

Guide section: "Diffusion ELBO derivation".  For every T ≥ 2 (first steps): with indexed log-densities F[t] =
log q(x_t|x_{t-1}), Q[t] = log q(x_t|x_0), P[t] = log q(x_{t-1}|x_t,x_0), R[t] = log p_θ(x_{t-1}|x_t), Bayes (E6,
proven at E5's and E6's Gaussian forms for general β_t, ᾱ_{t-1}) rewrites F[t], t ≥ 2; the Q-ratios telescope and the
log-ratio regroups into R[1] − (Q[T] − log p(x_T)) − Σ_{t=2}^T (P[t] − R[t]) -- identities between ``Sum``s proven by
induction on T (T = 2, then T → T + 1).  Their q-expectation is −ELBO_T = L_T + Σ_{t=2}^T L_{t-1} + L_0, and E1's lemma
L1 (log r ≤ r − 1) at r = w/p_θ(x_0), w = p_θ(x_{0:T})/q(x_{1:T}|x_0), with E_q[w] = p_θ(x_0), gives the bound
L_T + Σ L_{t-1} + L_0 ≥ −log p_θ(x_0) (an NLL bound, nats).

The worked examples (steps tagged "T = 3", "T = 4"): for a scalar chain with forward steps q(x_t|x_{t-1}) =
N(√α_t x_{t-1}, β_t), prior p(x_T) = N(0, 1) and *any* Gaussian reverse steps p_θ(x_{t-1}|x_t) =
N(m_t x_t + c_t, s_t) (symbolic m_t, c_t, s_t stand in for a network), the identity of log-densities

    log p_θ(x_{0:T}) - log q(x_{1:T}|x_0)
        = log p_θ(x_0|x_1) - [log q(x_T|x_0) - log p(x_T)] - Σ_{t=2}^T [log q(x_{t-1}|x_t,x_0) - log p_θ(x_{t-1}|x_t)]

holds for all x_0..x_T.  It follows from Bayes, q(x_t|x_{t-1}) = q(x_{t-1}|x_t,x_0) q(x_t|x_0)/q(x_{t-1}|x_0)
(E6), and the telescoping of the ratios q(x_t|x_0)/q(x_{t-1}|x_0).  Every concrete identity is proved by
comparing polynomial coefficients in the x's over the field of rational functions of the parameters, with the
log-normalisers compared as products (``algebra.log_identity``; ~0.1 s even for T = 4, where ``simplify`` runs for
minutes).
Taking the q-expectation turns each bracket into a KL (E1), giving the ELBO

    ELBO = E_q[log p_θ(x_0|x_1)] - KL(q(x_T|x_0) ‖ p(x_T))
           - Σ_{t≥2} E_{q(x_t|x_0)} KL(q(x_{t-1}|x_t,x_0) ‖ p_θ(x_{t-1}|x_t))

which is checked for T = 3 against the exact expectation under the chain's joint Gaussian law.

Parametrisation: the schedule enters as r_t = √α_t > 0 (β_t = 1 - r_t², ᾱ_t = r_1² ⋯ r_t²) so that every
coefficient is a rational function; exported results are in β_t.  The densities are built from E5's
``step_mean``/``step_variance``/``mean``/``variance``, E6's ``mean``/``variance`` and E1's ``log_density``/``kl``.

Exports (nats; T = 3 args are ``x0, x1, x2, x3, beta_1, beta_2, beta_3, m_1, m_2, m_3, c_1, c_2, c_3, s_1,
s_2, s_3`` for the ``*_T3`` results except ``elbo_T3``, which has no x_1..x_3):

- ``log_ratio_T3``: log p_θ(x_{0:3}) - log q(x_{1:3}|x_0); its expectation under q(x_{1:3}|x_0) is the ELBO.
- ``recon_T3`` = log p_θ(x_0|x_1); ``prior_T3`` = log q(x_3|x_0) - log p(x_3); ``denoise_T3_2``, ``denoise_T3_3``
  = log q(x_{t-1}|x_t,x_0) - log p_θ(x_{t-1}|x_t).  log_ratio = recon - prior - denoise_2 - denoise_3.
- ``elbo_T3(x0, beta_*, m_*, c_*, s_*)``: the exact ELBO of the T = 3 chain (≤ log p_θ(x_0)).
- ``prior_kl(x0, alpha_bar)``: KL(q(x_T|x_0) ‖ N(0, 1)) with ᾱ_T = ``alpha_bar`` (L_T).
- ``kl_term(xt, x0, beta, alpha_bar_prev, m, c, s)``: KL(q(x_{t-1}|x_t,x_0) ‖ N(m x_t + c, s)) (L_{t-1}).

Claims (overridable for tests): ``sign`` (+1: the textbook minus sign in front of Σ; -1 flips it) and
``variance_factor`` ({(T, t): factor} multiplying β̃_t in the claimed decomposition of chain T).
Tested in ``tests/test_symbolic_diffusion.py``.
"""

from __future__ import annotations

from functools import cache

import sympy as sp

from .algebra import LogAlgebra, log_identity, log_residual, standard_normal_moment
from .core import Derivation, Part, holds, nonnegative_parts
from .forward_marginal import alpha_bar, alpha_bar_prev, beta, x0, xt

CHAINS = (3, 4)
m, c = sp.symbols("m c", real=True)
s = sp.Symbol("s", positive=True)


class _Chain:
    """The concrete chain of length T: symbols, and every log-density as a SymPy expression."""

    def __init__(self, T: int, fm, po, log_density, variance_factor: dict):
        self.T = T
        self.xs = (x0, *sp.symbols(f"x1:{T + 1}", real=True))
        self.r = (None, *sp.symbols(f"r_1:{T + 1}", positive=True))  # r_t = √α_t
        self.betas = (None, *sp.symbols(f"beta_1:{T + 1}", positive=True))
        self.m = (None, *sp.symbols(f"m_1:{T + 1}", real=True))
        self.c = (None, *sp.symbols(f"c_1:{T + 1}", real=True))
        self.s = (None, *sp.symbols(f"s_1:{T + 1}", positive=True))
        self.b = (None, *[1 - self.r[t] ** 2 for t in range(1, T + 1)])
        ab = [sp.Integer(1)]
        for t in range(1, T + 1):
            ab.append(ab[-1] * self.r[t] ** 2)
        self.ab = tuple(ab)
        self.fm, self.po, self.log_density, self.variance_factor = fm, po, log_density, variance_factor

    def ln(self, z, mu, var):
        return self.log_density.at(z, mu, var)

    def fwd(self, t):  # log q(x_t|x_{t-1})
        xs, b = self.xs, self.b[t]
        return self.ln(xs[t], self.fm.result("step_mean").at(xs[t - 1], b), self.fm.result("step_variance").at(b))

    def marg(self, t):  # log q(x_t|x_0)
        return self.ln(self.xs[t], *_marginal(self.fm, self.ab[t]))

    def post_params(self, t, *, claimed=False):
        mean = self.po.result("mean").at(x0, self.xs[t], self.b[t], self.ab[t - 1])
        var = self.po.result("variance").at(self.b[t], self.ab[t - 1])
        if claimed:
            var = var * self.variance_factor.get((self.T, t), 1)
        return mean, var

    def post(self, t, *, claimed=False):  # log q(x_{t-1}|x_t, x_0)
        return self.ln(self.xs[t - 1], *self.post_params(t, claimed=claimed))

    def rev_params(self, t):
        return self.m[t] * self.xs[t] + self.c[t], self.s[t]

    def rev(self, t):  # log p_θ(x_{t-1}|x_t)
        return self.ln(self.xs[t - 1], *self.rev_params(t))

    def prior(self):  # log p(x_T)
        return self.ln(self.xs[self.T], 0, 1)

    def to_beta(self):
        return {self.r[t]: sp.sqrt(1 - self.betas[t]) for t in range(1, self.T + 1)}


def _marginal(fm, ab) -> tuple[sp.Expr, sp.Expr]:
    """(mean, variance) of q(x_t|x_0) at ᾱ_t = ``ab`` (E5 ``mean``, ``variance``)."""
    return fm.result("mean").at(x0, ab), fm.result("variance").at(ab)


def build(*, sign=1, variance_factor=None) -> Derivation:
    """Build E7. ``sign`` (textbook +1) and ``variance_factor`` ({(T, t): factor}) alter the claimed decomposition."""
    from . import get

    d = Derivation("telescoping", "E7", "Diffusion ELBO by telescoping", "Diffusion ELBO derivation")
    fm, po, e1 = get("forward_marginal"), get("posterior"), get("gaussian_kl")
    log_density, kl = e1.result("log_density"), e1.result("kl")
    factors = {k: sp.nsimplify(v, rational=True) for k, v in (variance_factor or {}).items()}
    sign = sp.nsimplify(sign, rational=True)

    d.assume(
        "0 < β_t < 1, α_t = 1 − β_t, 0 < ᾱ_t = α_t ᾱ_{t−1} ≤ ᾱ_{t−1} ≤ 1 (ᾱ_0 = 1), t = 1..T, T ≥ 2",
        "q(x_{1:T}|x_0) = Π_t q(x_t|x_{t−1}) (Markov); p_θ(x_{0:T}) = p(x_T) Π_t p_θ(x_{t−1}|x_t), every density > 0",
        "reverse steps p_θ(x_{t−1}|x_t) = N(m_t x_t + c_t, s_t), s_t > 0 (symbolic; any network's output)",
    )
    _general_steps(d, fm, po, e1, sign)

    chains = {}
    for T in CHAINS:
        ch = chains[T] = _Chain(T, fm, po, log_density, factors)
        ts, xs = range(1, T + 1), ch.xs
        lhs = ch.prior() + sum(ch.rev(t) for t in ts) - sum(ch.fwd(t) for t in ts)

        # Abstract bookkeeping: one symbol per log-density, to show which terms telescope away.
        F = {t: sp.Symbol(f"log q(x{t}|x{t - 1})") for t in ts}
        Q = {t: sp.Symbol(f"log q(x{t}|x0)") for t in ts}
        P = {t: sp.Symbol(f"log q(x{t - 1}|x{t},x0)") for t in ts}
        R = {t: sp.Symbol(f"log p(x{t - 1}|x{t})") for t in ts}
        Pr = sp.Symbol(f"log p(x{T})")
        a_lhs = Pr + sum(R.values()) - sum(F.values())
        bayes = {F[1]: Q[1], **{F[t]: P[t] + Q[t] - Q[t - 1] for t in ts if t >= 2}}
        a_bayes_terms = [Pr, *R.values(), -Q[1]] + [-(P[t] + Q[t] - Q[t - 1]) for t in ts if t >= 2]

        concrete = {Pr: ch.prior(), **{F[t]: ch.fwd(t) for t in ts}, **{Q[t]: ch.marg(t) for t in ts}}
        concrete |= {P[t]: ch.post(t) for t in ts if t >= 2} | {R[t]: ch.rev(t) for t in ts}

        def realise(expr, table=concrete):
            return sum(coef * table[sym] for sym, coef in sp.expand(expr).as_coefficients_dict().items())

        a_bayes_unsummed = sp.Add(*[sp.expand(t_) for t_ in a_bayes_terms], evaluate=False)
        d.step(
            f"T = {T}: split off t = 1 and rewrite each q(x_t|x_{{t-1}}), t ≥ 2, by Bayes (E6): q(x_t|x_{{t-1}}) ="
            " q(x_{t-1}|x_t,x_0) q(x_t|x_0)/q(x_{t-1}|x_0)",
            a_bayes_unsummed,
            "log p_θ(x_{0:T}) = log p(x_T) + Σ log p_θ(x_{t-1}|x_t); log q(x_{1:T}|x_0) = Σ log q(x_t|x_{t-1})",
            holds(
                lambda e, lhs=lhs, xs=xs, realise=realise: log_identity(lhs, realise(e.doit()), xs).run(),
                f"concrete T = {T} chain: coefficients in x0..x{T} agree over QQ(r, m, c, s), logs too",
                a_bayes_unsummed,
            ),
            before=a_lhs,
            scope=f"T = {T}",
        )

        a_tele = sp.expand(a_lhs.subs(bayes))  # SymPy's Add cancels the telescoping terms
        counts = {}
        for term in a_bayes_terms:
            for sym, coef in sp.expand(term).as_coefficients_dict().items():
                counts[sym] = counts.get(sym, 0) + coef
        cancelled = [sym for sym, k in counts.items() if k == 0 and any(sym in t_.free_symbols for t_ in a_bayes_terms)]
        expected = Pr + sum(R.values()) - Q[T] - sum(P[t] for t in ts if t >= 2)
        d.step(
            f"T = {T}: the ratios telescope, Σ_{{t=2}}^{T} [log q(x_t|x_0) - log q(x_{{t-1}}|x_0)] = log q(x{T}|x0) -"
            f" log q(x1|x0), and log q(x1|x0) cancels the t = 1 term. Cancelled: {', '.join(map(str, cancelled))}",
            a_tele,
            "each log q(x_t|x_0), 1 ≤ t < T, appears once with + and once with -",
            holds(
                lambda e, expected=expected, cancelled=cancelled, Q=Q, T=T, a_bayes_terms=a_bayes_terms: (
                    sp.expand(e - expected) == 0
                    and sp.expand(sp.Add(*a_bayes_terms) - e) == 0
                    and set(cancelled) == {Q[t] for t in range(1, T)},
                    f"remaining terms {sorted(map(str, sp.Add.make_args(e)))}; cancelled {sorted(map(str, cancelled))}",
                ),
                "collect the abstract log-terms; exactly log q(x_t|x_0), t < T, cancel",
                a_tele,
            ),
            before=a_bayes_unsummed,
            scope=f"T = {T}",
        )

        # The claimed decomposition (sign and β̃ perturbation are the claims).
        claim_table = dict(concrete) | {P[t]: ch.post(t, claimed=True) for t in ts if t >= 2}
        a_claim = R[1] - (Q[T] - Pr) - sign * sum(P[t] - R[t] for t in ts if t >= 2)

        def regroup(a_claim, a_tele=a_tele, lhs=lhs, table=claim_table, xs=xs, realise=realise):
            abstract = sp.expand(a_claim - a_tele)
            why = log_residual(lhs - realise(a_claim, table), xs)
            return abstract == 0 and why is None, (
                f"abstract regrouping residual {abstract}; concrete identity {why or 'holds: coefficients agree'}"
            )

        d.step(
            f"T = {T}: regroup: log p_θ(x0:{T}) - log q(x1:{T}|x0) = log p_θ(x0|x1) - [log q(x{T}|x0) - log p(x{T})]"
            " - Σ_{t≥2} [log q(x_{t-1}|x_t,x0) - log p_θ(x_{t-1}|x_t)]",
            a_claim,
            "the remaining terms, grouped as L_0, L_T and the L_{t-1}",
            holds(
                regroup,
                f"abstract regrouping and the concrete T = {T} identity in x0..x{T} (logs as products)",
                a_claim,
            ),
            before=a_lhs,
            scope=f"T = {T}",
        )

    # ------------------------------------------------------------------------------------------------
    # Expectations (T = 3): each bracket becomes a KL under q(x_{t-1}|x_t, x_0), then E over q(x_t|x_0).
    # ------------------------------------------------------------------------------------------------
    ch = chains[3]
    xs, ts = ch.xs, range(1, 4)
    # moments of the standard normal, integrated by SymPy (used for the chain's joint moments)
    moments = sp.Tuple(0, 1)
    d.step(
        "Moments of ε ~ N(0, 1): E[ε] = 0, E[ε²] = 1",
        moments,
        "integrate against the standard normal density",
        holds(
            lambda e: (
                standard_normal_moment(1) == e[0] and standard_normal_moment(2) == e[1],
                "∫ u N(u; 0, 1) du = 0, ∫ u² N(u; 0, 1) du = 1",
            ),
            "two Gaussian integrals",
            moments,
        ),
        kind="computed",
    )
    # Joint law of x_1..x_3 given x_0 from the forward steps alone: x_t = r_t x_{t-1} + √β_t ε_t, so
    # E[x_t] = r_t E[x_{t-1}], Cov(x_i, x_t) = r_t Cov(x_i, x_{t-1}) (i < t), Var(x_t) = r_t² Var(x_{t-1}) + β_t.
    mean = {0: x0}
    cov = {(0, 0): sp.Integer(0)}
    for t in ts:
        mean[t] = ch.r[t] * mean[t - 1]
        for i in range(t):
            cov[(i, t)] = ch.r[t] * cov[(i, t - 1)]
        cov[(t, t)] = sp.expand(ch.r[t] ** 2 * cov[(t - 1, t - 1)] + ch.b[t])

    brackets = {t: ch.post(t) - ch.rev(t) for t in (2, 3)}
    kls = {t: kl.at(*ch.post_params(t), *ch.rev_params(t)) for t in (2, 3)}
    prior_term = ch.marg(3) - ch.prior()
    prior_kl = kl.at(*_marginal(fm, ch.ab[3]), 0, 1)
    lhs3 = ch.prior() + sum(ch.rev(t) for t in ts) - sum(ch.fwd(t) for t in ts)
    recon = ch.rev(1)
    alg = LogAlgebra([lhs3, *brackets.values(), *kls.values(), prior_term, prior_kl], xs)
    first = {t: alg.poly(mean[t]) for t in ts}
    second = {(i, j): alg.poly(mean[i] * mean[j] + cov[(i, j)]) for i in ts for j in ts if i <= j}

    @cache
    def chain_e(expr):  # E over q(x_{1:3}|x_0), from the joint moments of the forward chain
        return alg(expr).expect(ts, first, second)

    @cache
    def marginal_e(expr, t):  # E over x_t ~ q(x_t|x_0) (E5), for an expression in x_t (and x_0) only
        mu_t, v_t = _marginal(fm, ch.ab[t])
        return alg(expr).expect([t], {t: alg.poly(mu_t)}, {(t, t): alg.poly(mu_t**2 + v_t)})

    def per_term(claimed) -> tuple[bool, str]:
        kl2, kl3, pkl = claimed
        bad = [f"L_{t - 1}" for t, k in ((2, kl2), (3, kl3)) if (chain_e(brackets[t]) - marginal_e(k, t)).residual()]
        bad += ["L_T"] if (chain_e(prior_term) - alg(pkl)).residual() else []
        return not bad, "all brackets agree" if not bad else f"mismatch in {', '.join(bad)}"

    kl_terms = sp.Tuple(*kls.values(), prior_kl)

    d.step(
        "T = 3: each bracket's q-expectation is a KL: E_q[log q(x_{t-1}|x_t,x_0) - log p_θ(x_{t-1}|x_t)] ="
        " E_{q(x_t|x_0)} KL(q(x_{t-1}|x_t,x_0) ‖ p_θ(x_{t-1}|x_t)) and E_q[log q(x_3|x_0) - log p(x_3)] ="
        " KL(q(x_3|x_0) ‖ p(x_3))",
        kl_terms,
        "q(x_{t-1}, x_t|x_0) = q(x_t|x_0) q(x_{t-1}|x_t,x_0) (E6), and the inner expectation is E1's KL",
        holds(
            per_term, "exact expectation under the chain's joint Gaussian law == E over q(x_t|x_0) of E1's kl", kl_terms
        ),
        before=sp.Tuple(*brackets.values(), prior_term),
        scope="T = 3",
    )

    def elbo_lp():
        total = marginal_e(recon, 1) - alg(prior_kl)
        for t in (2, 3):
            total = total - marginal_e(kls[t], t) if sign == 1 else total + marginal_e(kls[t], t)
        return total

    elbo_expr = alg.expr(elbo_lp())
    d.step(
        "Hence the ELBO: E_q[log p_θ(x_{0:T}) - log q(x_{1:T}|x_0)] = E_q[log p_θ(x_0|x_1)] - KL(q(x_T|x_0) ‖ p(x_T))"
        " - Σ_{t≥2} E_{q(x_t|x_0)} KL(q(x_{t-1}|x_t,x_0) ‖ p_θ(x_{t-1}|x_t))",
        elbo_expr,
        "take the q-expectation of the T = 3 identity term by term",
        holds(
            lambda e: (
                (why := (chain_e(lhs3) - alg(e)).residual()) is None and (alg(e) - elbo_lp()).residual() is None,
                why or "E_q of the log-ratio == the decomposed ELBO (exact, polynomial in x0 over QQ(r, m, c, s))",
            ),
            "exact expectation of the log-ratio under the chain vs the sum of the terms",
            elbo_expr,
        ),
        before=sp.Symbol("E_q[log p(x_0:3) - log q(x_1:3|x_0)]"),
        scope="T = 3",
    )

    # Exports, in β_t (r_t = √(1 - β_t)): each the after-expression of a step that checks it.
    to_beta = ch.to_beta()
    args3 = (*xs, *ch.betas[1:], *ch.m[1:], *ch.c[1:], *ch.s[1:])
    originals = (lhs3, recon, prior_term, brackets[2], brackets[3], elbo_expr)
    in_beta = sp.Tuple(*[e.xreplace(to_beta) for e in originals])
    to_r = {ch.betas[t]: 1 - ch.r[t] ** 2 for t in ts}

    def same_in_r(forms) -> tuple[bool, str]:
        if len(forms) != len(originals):
            return False, "wrong number of forms"
        bad = [
            i for i, (f, o) in enumerate(zip(forms, originals)) if log_residual(f.xreplace(to_r) - o, xs) is not None
        ]
        return not bad, f"forms differing: {bad}" if bad else "each form at β_t = 1 − r_t² is the chain's expression"

    d.step(
        "The T = 3 terms in β_t (exported): log-ratio, log p_θ(x_0|x_1), the prior term, the two denoising terms, ELBO",
        in_beta,
        "substitute r_t = √(1 − β_t)",
        holds(same_in_r, "each form with β_t = 1 − r_t² against the chain's expression (exact)", in_beta),
        scope="T = 3",
    )
    d.export("log_ratio_T3", in_beta[0], args3, "log p_θ(x_{0:3}) - log q(x_{1:3}|x_0), nats")
    d.export("recon_T3", in_beta[1], args3, "log p_θ(x_0|x_1), nats")
    d.export("prior_T3", in_beta[2], args3, "log q(x_3|x_0) - log p(x_3), nats")
    for i, t in enumerate((2, 3)):
        d.export(f"denoise_T3_{t}", in_beta[3 + i], args3, f"log q(x_{t - 1}|x_{t},x_0) - log p_θ, nats")
    d.export("elbo_T3", in_beta[5], (x0, *args3[4:]), "exact ELBO of the T = 3 chain, nats")

    # L_T and L_{t-1} for general t, from E1's KL (E5's marginal; E6's posterior).
    prior_kl_t = kl.at(*_marginal(fm, alpha_bar), 0, 1)
    pm, pv = po.result("mean").at(x0, xt, beta, alpha_bar_prev), po.result("variance").at(beta, alpha_bar_prev)
    kl_term = kl.at(pm, pv, m * xt + c, s)
    general_terms = sp.Tuple(prior_kl_t, kl_term)
    u = sp.Symbol("u", real=True)

    def kls_by_integration(terms) -> tuple[bool, str]:
        # L_T = ∫ q(x_T|x_0) log(q/p) and L_{t−1} = ∫ q(x_{t−1}|x_t, x_0) log(q/p_θ), by the moments of the first law
        from .algebra import expect_normal

        mu_T, var_T = _marginal(fm, alpha_bar)
        lt = expect_normal(log_density.at(u, mu_T, var_T) - log_density.at(u, 0, 1), u, mu_T, var_T)
        lk = expect_normal(log_density.at(u, pm, pv) - log_density.at(u, m * xt + c, s), u, pm, pv)
        ok = log_residual(lt - terms[0], [x0]) is None and log_residual(_in_alpha(lk - terms[1]), [x0, xt]) is None
        return ok, "both KLs integrated against their first Gaussian and compared (exact)"

    d.step(
        "For every t: L_T = KL(q(x_T|x_0) ‖ N(0, 1)) and L_{t−1} = KL(q(x_{t−1}|x_t,x_0) ‖ N(m x_t + c, s)) "
        "(E1, E5, E6)",
        general_terms,
        "E1's KL at E5's marginal (ᾱ_T) and at E6's posterior (β_t, ᾱ_{t−1})",
        holds(kls_by_integration, "each KL integrated against its first density and compared", general_terms),
    )
    d.export("prior_kl", prior_kl_t, (x0, alpha_bar), "KL(q(x_T|x_0) ‖ N(0, 1)), nats")
    d.export("kl_term", kl_term, (xt, x0, beta, alpha_bar_prev, m, c, s), "L_{t-1}, nats")
    return d


_ALPHA = sp.Symbol("alpha", positive=True)


def _in_alpha(e: sp.Expr) -> sp.Expr:
    """``e`` with β_t = 1 − α_t (α_t > 0 a symbol): √(α_t ᾱ_{t−1}) splits into √α_t √ᾱ_{t−1}, radicals of symbols."""
    return sp.sympify(e).subs(beta, 1 - _ALPHA)


def _sum_identity(a: sp.Expr, b: sp.Expr, t: sp.Symbol, T: sp.Symbol, base: int = 2) -> str | None:
    """``None`` when ``a == b`` for every integer T ≥ ``base``, proven by induction on T: at T = base (sums
    evaluated), and a(T + 1) − a(T) == b(T + 1) − b(T) (each sum Σ_{t=k}^{T+1} f peeled to Σ_{t=k}^{T} f + f(T + 1)).
    Else the reason."""

    def peel(e):
        def one(x):
            (var, lo, hi) = x.limits[0]
            return sp.Sum(x.function, (var, lo, hi - 1)) + x.function.subs(var, hi)

        return e.replace(lambda x: isinstance(x, sp.Sum) and x.limits[0][2] == T + 1, one)

    diff = sp.sympify(a) - sp.sympify(b)
    at_base = sp.expand(diff.subs(T, base).doit())
    if at_base != 0:
        return f"fails at T = {base}: residual {at_base}"
    step = sp.expand(peel(diff.subs(T, T + 1)) - diff)
    if step != 0:
        return f"inductive step T → T + 1 leaves {step}"
    return None


def _general_steps(d: Derivation, fm, po, e1, sign) -> None:
    """E7 for every T ≥ 2: the Bayes rewrite, the telescoping sum and the decomposition, as identities between
    indexed log-densities (``Sum`` over t, proven by induction on T), then the bound ≥ −log p_θ(x_0) from L1 (E1)."""
    t, T = sp.symbols("t T", integer=True, positive=True)
    F, Q, P, R = (sp.IndexedBase(n, real=True) for n in ("F", "Q", "P", "R"))
    Pr = sp.Symbol("log p(x_T)", real=True)
    names = (
        "F[t] = log q(x_t|x_{t−1}), Q[t] = log q(x_t|x_0), P[t] = log q(x_{t−1}|x_t,x_0), R[t] = log p_θ(x_{t−1}|x_t)"
    )

    # G1. Bayes (E6) for every t ≥ 2, as an identity of Gaussian log-densities at general (β_t, ᾱ_{t−1}).
    x_prev = sp.Symbol("x_prev", real=True)
    log_density = e1.result("log_density")
    ab_t = (1 - beta) * alpha_bar_prev
    concrete = {
        F[t]: log_density.at(xt, fm.result("step_mean").at(x_prev, beta), fm.result("step_variance").at(beta)),
        P[t]: log_density.at(
            x_prev, po.result("mean").at(x0, xt, beta, alpha_bar_prev), po.result("variance").at(beta, alpha_bar_prev)
        ),
        Q[t]: log_density.at(xt, fm.result("mean").at(x0, ab_t), fm.result("variance").at(ab_t)),
        Q[t - 1]: log_density.at(
            x_prev, fm.result("mean").at(x0, alpha_bar_prev), fm.result("variance").at(alpha_bar_prev)
        ),
    }
    bayes = sp.Eq(F[t], P[t] + Q[t] - Q[t - 1])

    def bayes_holds(eq) -> tuple[bool, str]:
        if not isinstance(eq, sp.Equality):
            return False, "not an equation"
        residual = (eq.lhs - eq.rhs).xreplace(concrete)
        if residual.has(sp.Indexed):
            return False, "terms other than F[t], P[t], Q[t], Q[t−1]"
        why = log_residual(_in_alpha(residual), [x_prev, xt, x0])
        return why is None, why or "the Gaussian log-densities of E5 and E6 satisfy it for all x_{t−1}, x_t, x_0"

    d.step(
        f"Bayes (E6), for every t ≥ 2 and any T: q(x_t|x_{{t−1}}) = q(x_{{t−1}}|x_t,x_0) q(x_t|x_0)/q(x_{{t−1}}|x_0) "
        f"({names})",
        bayes,
        "q(x_t|x_{t−1}) = q(x_t|x_{t−1}, x_0) (Markov) and Bayes; E6 proves the Gaussian forms agree",
        holds(bayes_holds, "the identity at E5's and E6's Gaussian log-densities (general β_t, ᾱ_{t−1})", bayes),
    )

    # G2. Split off t = 1 and apply G1 inside the sum over t ≥ 2.
    log_ratio = Pr + sp.Sum(R[t], (t, 1, T)) - sp.Sum(F[t], (t, 1, T))
    after_bayes = Pr + sp.Sum(R[t], (t, 1, T)) - F[1] - sp.Sum(bayes.rhs, (t, 2, T))

    def split_and_substitute(e) -> tuple[bool, str]:
        # log_ratio − e must be Σ_{t=2}^{T} (Bayes rhs − F[t]), which G1 makes 0 term by term
        why = _sum_identity(log_ratio - e, sp.Sum(bayes.rhs - bayes.lhs, (t, 2, T)), t, T)
        return why is None, why or "log-ratio − (after) = Σ_{t=2}^T (G1's rhs − lhs), by induction on T"

    d.step(
        "Any T: log p_θ(x_{0:T}) − log q(x_{1:T}|x_0) = log p(x_T) + Σ_t R[t] − F[1] − Σ_{t=2}^T (P[t] + Q[t] − "
        "Q[t−1])",
        after_bayes,
        "the Markov factorisations, the t = 1 term split off, Bayes (previous step) for t ≥ 2",
        holds(split_and_substitute, "induction on T (T = 2, then T → T + 1) with the Bayes identity", after_bayes),
        before=log_ratio,
    )

    # G3. The telescoping sum.
    telescoped = Q[T] - Q[1]
    d.step(
        "Any T: Σ_{t=2}^T (Q[t] − Q[t−1]) = Q[T] − Q[1] (the ratios q(x_t|x_0)/q(x_{t−1}|x_0) telescope)",
        telescoped,
        "each Q[t], 1 < t < T, appears once with + and once with −",
        holds(
            lambda e: (
                (why := _sum_identity(sp.Sum(Q[t] - Q[t - 1], (t, 2, T)), e, t, T)) is None,
                why or "by induction on T",
            ),
            "induction on T",
            telescoped,
        ),
        before=sp.Sum(Q[t] - Q[t - 1], (t, 2, T)),
    )

    # G4. Regroup (F[1] = Q[1]: q(x_1|x_0) is both).
    decomposition = R[1] - (Q[T] - Pr) - sign * sp.Sum(P[t] - R[t], (t, 2, T))

    def regroup(e) -> tuple[bool, str]:
        lhs = after_bayes.xreplace({F[1]: Q[1]})
        why = _sum_identity(lhs, e, t, T)
        return why is None, why or "equal for every T ≥ 2 (induction), with F[1] = Q[1]"

    d.step(
        "Any T: the log-ratio = log p_θ(x_0|x_1) − [log q(x_T|x_0) − log p(x_T)] − Σ_{t=2}^T [log q(x_{t−1}|x_t,x_0) − "
        "log p_θ(x_{t−1}|x_t)]",
        decomposition,
        "telescope (previous step); q(x_1|x_0) cancels the t = 1 forward term",
        holds(regroup, "induction on T of the regrouped identity", decomposition),
        before=after_bayes,
    )

    # G5. Expectations under q(x_{1:T}|x_0): L_0 = −E log p_θ(x_0|x_1), L_T = KL, L_{t−1} = E_{q(x_t|x_0)} KL.
    Lt, L0, LT, ELBO = sp.IndexedBase("L", real=True), sp.Symbol("L_0"), sp.Symbol("L_T"), sp.Symbol("ELBO_T")
    bound = sp.Eq(-ELBO, LT + sp.Sum(Lt[t - 1], (t, 2, T)) + L0)

    def in_expectation(eq) -> tuple[bool, str]:
        # E is linear: map each bracket of the decomposition to its expectation's name
        image = decomposition.replace(
            lambda x: isinstance(x, sp.Sum), lambda x: sp.Sum(Lt[x.limits[0][0] - 1], x.limits)
        ).xreplace({R[1]: -L0, Q[T]: LT + Pr})
        ok = isinstance(eq, sp.Equality) and eq.lhs == -ELBO and _sum_identity(-image, eq.rhs, t, T) is None
        return ok, "E of each bracket: E[R[1]] = −L_0, E[Q[T] − log p(x_T)] = L_T, E[P[t] − R[t]] = L_{t−1}"

    d.step(
        "Take E over q(x_{1:T}|x_0): −ELBO = L_T + Σ_{t=2}^T L_{t−1} + L_0, with L_T = KL(q(x_T|x_0) ‖ p(x_T)), "
        "L_{t−1} = E_{q(x_t|x_0)} KL(q(x_{t−1}|x_t,x_0) ‖ p_θ(x_{t−1}|x_t)), L_0 = −E log p_θ(x_0|x_1)",
        bound,
        "linearity of E; q(x_{t−1}, x_t|x_0) = q(x_t|x_0) q(x_{t−1}|x_t,x_0) turns each bracket into a KL (E1)",
        holds(in_expectation, "the decomposition with each bracket replaced by its expectation", bound),
    )

    # G6. The bound: L1 (E1) at r = w/p_θ(x_0), w = p_θ(x_{0:T})/q(x_{1:T}|x_0), then E with E_q[w] = p_θ(x_0).
    lemma = next(st.after for st in e1.steps if st.statement.startswith("Lemma L1"))
    r = lemma.lhs.args[0]
    W, Px0, EW = sp.Symbol("w", positive=True), sp.Symbol("p_θ(x_0)", positive=True), sp.Symbol("E_q[w]", positive=True)
    pointwise = sp.Le(sp.log(W) - sp.log(Px0), W / Px0 - 1)
    d.step(
        "Pointwise, w = p_θ(x_{0:T})/q(x_{1:T}|x_0) > 0: log w − log p_θ(x_0) ≤ w/p_θ(x_0) − 1 (L1 at r = w/p_θ(x_0))",
        pointwise,
        "E1's lemma L1: log r ≤ r − 1",
        nonnegative_parts(pointwise, [Part(W / Px0 - 1 - sp.log(W / Px0), lemma, ((r, W / Px0),), "L1")]),
    )
    unbiased = sp.Eq(EW, Px0)
    d.step(
        "E_q[w] = ∫ q(x_{1:T}|x_0) p_θ(x_{0:T})/q(x_{1:T}|x_0) dx_{1:T} = ∫ p_θ(x_{0:T}) dx_{1:T} = p_θ(x_0)",
        unbiased,
        "q cancels (q > 0); integrating the joint over x_{1:T} gives the marginal p_θ(x_0) (its definition)",
        holds(
            lambda eq: (
                isinstance(eq, sp.Equality) and eq.lhs == EW and eq.rhs == Px0,
                "the integrand q·(p_θ/q) = p_θ; the x_{1:T}-integral of p_θ(x_{0:T}) is p_θ(x_0) by definition",
            ),
            "cancel q; the marginal's definition",
            unbiased,
        ),
    )
    final = sp.Ge(LT + sp.Sum(Lt[t - 1], (t, 2, T)) + L0, -sp.log(Px0))

    def take_expectation(rel) -> tuple[bool, str]:
        # E (linear, monotone) of the pointwise bound: E log w = ELBO_T, E[w] = p_θ(x_0) -> ELBO_T ≤ log p_θ(x_0);
        # with −ELBO_T = L_T + Σ L_{t−1} + L_0 (G5): the sum ≥ −log p_θ(x_0).
        image = pointwise.xreplace({sp.log(W): ELBO, W: EW}).xreplace({EW: unbiased.rhs})
        gap_e = sp.simplify(image.rhs - image.lhs)  # ≥ 0 : log p_θ(x_0) − ELBO_T
        if not isinstance(rel, (sp.GreaterThan, sp.StrictGreaterThan)):
            return False, f"not a lower bound: {rel}"
        claimed = sp.simplify((rel.lhs - rel.rhs) - (bound.rhs - bound.lhs))  # the sum replaced by −ELBO_T (G5)
        ok = isinstance(rel, sp.GreaterThan) and sp.simplify(claimed - gap_e) == 0
        return ok, f"sum − (−log p_θ(x_0)) = {claimed} = log p_θ(x_0) − ELBO_T ≥ 0 (E of the pointwise bound)"

    d.step(
        "Hence the diffusion bound: L_T + Σ_{t=2}^T L_{t−1} + L_0 ≥ −log p_θ(x_0) for every T (an NLL bound, nats)",
        final,
        "E of the pointwise bound (linear, monotone), E_q[w] = p_θ(x_0), and −ELBO_T = L_T + Σ L_{t−1} + L_0",
        holds(take_expectation, "the pointwise L1 bound in expectation, with the decomposition", final),
    )

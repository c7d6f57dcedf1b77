"""E2 -- reparameterization: z = mu + sigma·eps with eps ~ N(0, 1) has the law N(mu, sigma²); its gradients.

Guide section: "The VAE route" (sampling would otherwise break gradient flow).  Exports (argument order fixed):

- ``sample(mu, sigma, eps)``: z = mu + sigma·eps.
- ``grad_mu(mu, sigma, eps)``: ∂z/∂mu (= 1, a constant: the numpy/torch callables return a scalar).
- ``grad_sigma(mu, sigma, eps)``: ∂z/∂sigma (= eps).
- ``density(z, mu, sigma)``: the density of z obtained by the change of variables (= N(z; mu, sigma²)).
- ``pathwise_grad_mu(mu, sigma)``, ``pathwise_grad_sigma(mu, sigma)``: E_eps[∂f(mu + sigma·eps)/∂θ] for
  f(z) = z², which equal ∂/∂θ E[f(z)] (= 2·mu and 2·sigma).

Expectations against eps are integrals against the standard normal density (SymPy ``integrate`` of each power
of eps, :mod:`.algebra`); expectations under N(mu, sigma²) are integrated directly in z.
Numeric counterparts: the VAE encoder's sampling (``mu + sigma * eps``), tested in ``tests/test_symbolic_vae.py``.
"""

from __future__ import annotations

import sympy as sp

from .algebra import expect_normal, expect_normal_direct, log_identity, normal_pdf
from .core import Derivation, holds, matches

mu = sp.Symbol("mu", real=True)
sigma = sp.Symbol("sigma", positive=True)
eps = sp.Symbol("eps", real=True)
z = sp.Symbol("z", real=True)

SAMPLE = mu + sigma * eps
TEXTBOOK_DENSITY = normal_pdf(z, mu, sigma**2)
ONE = sp.Integer(1)


def f_square(v):
    """The test function f(z) = z² of the pathwise-gradient steps."""
    return v**2


def build(
    *,
    density=TEXTBOOK_DENSITY,
    mean=mu,
    variance=sigma**2,
    grad_mu=ONE,
    grad_sigma=eps,
    pathwise_mu=2 * mu,
    pathwise_sigma=2 * sigma,
) -> Derivation:
    """Build E2.  Every keyword is a claimed (textbook) expression; tests pass wrong ones and expect a ✗."""
    d = Derivation("reparameterization", "E2", "Reparameterization: mu + sigma·eps ~ N(mu, sigma²)", "The VAE route")
    d.assume("sigma > 0", "eps ~ N(0, 1); mu real")

    # 1. The sample z = g(eps) = mu + sigma·eps is strictly increasing (sigma > 0) with a unique inverse (SymPy).
    inverse_claim = (z - mu) / sigma
    sample_eq = sp.Eq(z, SAMPLE)

    def invertible(eq) -> tuple[bool, str]:
        solutions = sp.solve(eq, eps)
        slope = sp.diff(eq.rhs, eps)
        ok = len(solutions) == 1 and sp.simplify(solutions[0] - inverse_claim) == 0 and slope.is_positive is True
        return ok, f"eps = {solutions} (claimed {inverse_claim}); dz/deps = {slope} > 0"

    d.step(
        "The sample z = g(eps) = mu + sigma·eps is strictly increasing in eps, with inverse g⁻¹(z) = (z − mu)/sigma",
        sample_eq,
        "solve z = mu + sigma·eps for eps; dz/deps = sigma > 0",
        holds(invertible, "solve has exactly one root, the claimed inverse, and dz/deps > 0", sample_eq),
    )
    inverse = inverse_claim

    # 2. Change of variables: p_z(z) = p_eps(g^{-1}(z)) |d g^{-1}/dz|.
    jacobian = sp.diff(inverse, z)
    density_derived = normal_pdf(inverse, 0, 1) * sp.Abs(jacobian)
    d.step(
        "Change of variables: the density of z is N(g⁻¹(z); 0, 1)·|dg⁻¹/dz|, which is N(z; mu, sigma²)",
        density,
        "p_z(z) = p_eps(g⁻¹(z)) |dg⁻¹/dz| for an invertible differentiable g; compared as log-densities",
        holds(
            lambda dens: log_identity(sp.log(density_derived), sp.log(dens)).run(), "compared as log-densities", density
        ),
        before=sp.Function("p_eps")(inverse) * sp.Abs(jacobian),
    )

    # 3-5. Mean and variance by integrating against the standard normal, matched with the moments of the law.
    mean_eps = expect_normal(z, z, mu, sigma**2)  # E[mu + sigma eps], eps ~ N(0, 1)
    var_eps = sp.expand(expect_normal((z - mean_eps) ** 2, z, mu, sigma**2))
    d.step(
        "E[mu + sigma·eps] = ∫ (mu + sigma·u) N(u; 0, 1) du",
        mean,
        "integrate each power of u against the standard normal (E[u⁰] = 1, E[u] = 0)",
        matches(lambda: expect_normal(z, z, mu, sigma**2), mean, "integrated against N(0, 1), compared"),
        before=sp.Integral((mu + sigma * eps) * normal_pdf(eps, 0, 1), (eps, -sp.oo, sp.oo)),
        kind="computed",
    )
    d.step(
        "Var[mu + sigma·eps] = ∫ (sigma·u)² N(u; 0, 1) du",
        variance,
        "E[u²] = 1 by integration",
        matches(lambda: expect_normal((z - mu) ** 2, z, mu, sigma**2), variance, "E[(sigma·u)²] integrated, compared"),
        before=sp.Integral((sigma * eps) ** 2 * normal_pdf(eps, 0, 1), (eps, -sp.oo, sp.oo)),
        kind="computed",
    )

    def moments_of_law(claimed) -> tuple[bool, str]:
        m1 = expect_normal_direct(z, z, mu, sigma**2)
        m2 = expect_normal_direct((z - mu) ** 2, z, mu, sigma**2)
        ok = sp.simplify(m1 - claimed[0]) == 0 and sp.simplify(m2 - claimed[1]) == 0
        return ok, f"∫ z N(z; mu, sigma²) dz = {m1}; ∫ (z - mu)² N dz = {sp.factor(m2)}"

    law_moments = sp.Tuple(mean, variance)
    d.step(
        "These are the mean and variance of N(mu, sigma²), integrated directly in z",
        law_moments,
        "first two moments of the density of step 2",
        holds(moments_of_law, "moments of N(mu, sigma²) by integrating in z", law_moments),
        before=sp.Tuple(mean_eps, var_eps),
        kind="computed",
    )

    # 6-7. Gradients of the sample with respect to the parameters: the noise is held fixed.
    g_mu, g_sigma = sp.diff(SAMPLE, mu), sp.diff(SAMPLE, sigma)
    d.step(
        "∂z/∂mu with eps held fixed",
        g_mu,
        "differentiate mu + sigma·eps",
        holds(
            lambda e: (
                sp.simplify(sp.diff(SAMPLE, mu) - e) == 0 and sp.simplify(e - grad_mu) == 0,
                f"claimed {grad_mu}",
            ),
            "differentiated by SymPy, compared with the claim",
            g_mu,
        ),
        before=sp.Derivative(SAMPLE, mu),
        kind="computed",
    )
    d.step(
        "∂z/∂sigma with eps held fixed",
        g_sigma,
        "differentiate mu + sigma·eps",
        holds(
            lambda e: (
                sp.simplify(sp.diff(SAMPLE, sigma) - e) == 0 and sp.simplify(e - grad_sigma) == 0,
                f"claimed {grad_sigma}",
            ),
            "differentiated by SymPy, compared with the claim",
            g_sigma,
        ),
        before=sp.Derivative(SAMPLE, sigma),
        kind="computed",
    )

    # 8-9. Pathwise gradient: E[∂f(g(eps))/∂θ] = ∂/∂θ E[f(z)], here for f(z) = z².
    expected_f = expect_normal_direct(f_square(z), z, mu, sigma**2)  # ∫ f(z) N(z; mu, sigma²) dz
    pathwise = {}
    for theta, claim in ((mu, pathwise_mu), (sigma, pathwise_sigma)):
        inner = sp.diff(f_square(SAMPLE), theta)  # chain rule through the sample, eps fixed
        through_sample = expect_normal(inner, eps, 0, 1)  # ∫ inner N(eps; 0, 1) deps
        of_expectation = sp.diff(expected_f, theta)
        pathwise[theta] = through_sample

        def both_sides(a, inner=inner, b=of_expectation, c=claim, theta=theta) -> tuple[bool, str]:
            r0 = sp.simplify(expect_normal(inner, eps, 0, 1) - a)
            ra, rb = sp.simplify(a - c), sp.simplify(b - c)
            return r0 == 0 and ra == 0 and rb == 0, f"E[∂f/∂{theta}] = {a}; ∂E[f]/∂{theta} = {b}; claimed {c}"

        d.step(
            f"Pathwise gradient: E_eps[∂f(mu + sigma·eps)/∂{theta}] = ∂/∂{theta} E[f(z)]",
            through_sample,
            "the expectation is over eps, whose law does not depend on the parameters, so ∂ and E commute",
            holds(both_sides, "both sides integrated by SymPy and compared with the claim", through_sample),
            before=sp.Integral(inner * normal_pdf(eps, 0, 1), (eps, -sp.oo, sp.oo)),
            scope="for f = z²",
        )

    d.export("sample", SAMPLE, (mu, sigma, eps), "z = mu + sigma·eps")
    d.export("grad_mu", g_mu, (mu, sigma, eps), "∂z/∂mu")
    d.export("grad_sigma", g_sigma, (mu, sigma, eps), "∂z/∂sigma")
    d.export("density", density, (z, mu, sigma), "density of mu + sigma·eps")
    d.export("pathwise_grad_mu", pathwise[mu], (mu, sigma), "E[∂(z²)/∂mu] = ∂E[z²]/∂mu")
    d.export("pathwise_grad_sigma", pathwise[sigma], (mu, sigma), "E[∂(z²)/∂sigma] = ∂E[z²]/∂sigma")
    return d

# %% [markdown]
# # The VAE route: the Gaussian KL (E1), reparameterization (E2), the ELBO (E3) and an exact model (E4)
#
# *Guide section "The VAE route"; docs page 2.*
#
# A VAE is trained on the evidence lower bound. Four derivations make it checkable: the KL between Gaussians
# from its integral, the reparameterization that lets gradients pass through sampling, the two faces of the
# ELBO (and why it is a lower bound), and a linear-Gaussian VAE whose log-likelihood and posterior are exact —
# so the ELBO's gap can be measured instead of guessed.
#
# Every formula comes from `elbo_lab/symbolic/` (`gaussian_kl.py`, `reparameterization.py`, `vae_elbo.py`,
# `linear_gaussian.py`), proven by SymPy as this runs. Run: `python derivations/01_vae_elbo.py`
# (`--figures DIR` saves the figures), or open it as a notebook.

# %%
import matplotlib.pyplot as plt
import numpy as np

from elbo_lab import teach
from elbo_lab.symbolic import reference

# %% [markdown]
# ## E1 — the Gaussian KL, from its integral
#
# SymPy integrates the log-ratio of two Gaussian densities against the first one; the result is the textbook
# closed form, additive over independent dimensions, and never negative.

# %%
E1 = teach.report("gaussian_kl")
teach.steps(E1, upto=5)

# %%
teach.steps(E1, upto=7)

# %%
teach.finish(E1)
kl = teach.result(E1, "kl")

# %% [markdown]
# The closed form against a Monte Carlo estimate of the same integral (100,000 draws, ±4 standard errors):

# %%
rng = np.random.default_rng(0)
mu1, var1, mu2, var2 = 0.3, 0.5, -0.2, 1.4
x = mu1 + np.sqrt(var1) * rng.standard_normal(100_000)
log_ratio = reference("gaussian_kl", "log_density", x=x, mu1=mu1, var1=var1) - reference(
    "gaussian_kl", "log_density", x=x, mu1=mu2, var1=var2
)
mc, se = log_ratio.mean(), log_ratio.std(ddof=1) / np.sqrt(len(x))
closed = float(reference("gaussian_kl", "kl", mu1=mu1, var1=var1, mu2=mu2, var2=var2))
teach.table(
    ["KL(N(0.3, 0.5) ‖ N(−0.2, 1.4))", "nats"],
    [["closed form (E1)", f"{closed:.5f}"], ["Monte Carlo", f"{mc:.5f} ± {se:.5f}"]],
)
assert abs(mc - closed) < 4 * se

# %% [markdown]
# ## E2 — reparameterization
#
# z = μ + σ ε with standard normal ε has the law N(μ, σ²), and its derivatives with respect to μ and σ are 1 and ε:
# gradients of an expectation can be taken inside it, draw by draw.

# %%
E2 = teach.report("reparameterization")
teach.steps(E2, upto=5)

# %%
teach.steps(E2, upto=9)
teach.finish(E2)

# %% [markdown]
# ## E3 — the two faces of the ELBO
#
# log p(x) splits, for every z, into a term whose q-average is the ELBO and a term whose q-average is the KL from
# q(z|x) to the true posterior. In a conjugate model SymPy then does every integral exactly.

# %%
E3 = teach.report("vae_elbo")
teach.steps(E3, upto=3)

# %%
teach.steps(E3, upto=8)

# %%
teach.steps(E3, upto=15)

# %% [markdown]
# The importance-weighted bound IWAE_k sits between the ELBO and log p(x) — proven from the same lemma:

# %%
teach.finish(E3)

# %% [markdown]
# ## E4 — a linear-Gaussian VAE: exact log p(x), exact posterior, and the gap
#
# With p(z) = N(0, 1) and p(x|z) = N(w z + b, σ²) the marginal and the posterior are Gaussian. The ELBO of any
# Gaussian q(z|x) = N(m, v) falls short of log p(x) by exactly KL(q ‖ p(z|x)), and touches it at the posterior.

# %%
E4 = teach.report("linear_gaussian")
teach.steps(E4, upto=6)

# %%
teach.steps(E4, upto=11)

# %%
teach.finish(E4)

# %% [markdown]
# ## The gap, drawn
#
# One data point x = 1.2 under w = 0.8, b = 0.1, σ² = 0.3. Left: the ELBO as the encoder mean m moves (v fixed at
# the posterior variance) — it touches log p(x) only at the posterior mean. Right: the gap is KL(q ‖ p(z|x)).
# All curves are the lambdified exports `elbo`, `log_marginal`, `gap` of E4.

# %%
x, w, b, s2 = 1.2, 0.8, 0.1, 0.3
logp = float(reference("linear_gaussian", "log_marginal", x=x, w=w, b=b, sigma2=s2))
m_star = float(reference("linear_gaussian", "posterior_mean", x=x, w=w, b=b, sigma2=s2))
v_star = float(reference("linear_gaussian", "posterior_variance", w=w, sigma2=s2))
ms = np.linspace(m_star - 2.0, m_star + 2.0, 201)
elbo = reference("linear_gaussian", "elbo", x=x, w=w, b=b, sigma2=s2, m=ms, v=v_star)
gap = reference("linear_gaussian", "gap", x=x, w=w, b=b, sigma2=s2, m=ms, v=v_star)
kl_to_posterior = reference("gaussian_kl", "kl", mu1=ms, var1=v_star, mu2=m_star, var2=v_star)
assert np.allclose(logp - elbo, gap, atol=1e-12) and np.allclose(gap, kl_to_posterior, atol=1e-12)
assert float(elbo.max()) <= logp + 1e-12
teach.table(
    ["", "value (nats)"],
    [
        ["log p(x), exact", f"{logp:.5f}"],
        ["posterior N(m*, v*)", f"m* = {m_star:.4f}, v* = {v_star:.4f}"],
        ["max over m of the ELBO", f"{elbo.max():.5f} (at m = {ms[elbo.argmax()]:.3f})"],
        ["max |gap − KL(q ‖ p(z|x))|", f"{np.abs(gap - kl_to_posterior).max():.1e}"],
    ],
)

# %%
fig, (a1, a2) = plt.subplots(1, 2, figsize=(9.0, 3.2))
a1.plot(ms, elbo, label="ELBO(m, v*)")
a1.axhline(logp, color="k", ls="--", lw=1, label="log p(x), exact")
a1.axvline(m_star, color="gray", lw=0.8)
a1.set_xlabel("encoder mean m")
a1.set_ylabel("nats")
a1.legend(fontsize=8, loc="lower center")
a1.set_title("the ELBO is below log p(x), equal at the posterior", fontsize=9)
a2.plot(ms, gap, label="log p(x) − ELBO")
a2.plot(ms, kl_to_posterior, ls=":", lw=3, label="KL(q ‖ p(z|x)), E1")
a2.set_xlabel("encoder mean m")
a2.legend(fontsize=8)
a2.set_title("the gap is the KL to the true posterior", fontsize=9)
fig.tight_layout()
teach.figure(fig, "elbo_gap")

# %% [markdown]
# # The diffusion ELBO: an exact telescoping identity (E7) and mean matching (E8)
#
# *Guide section "Diffusion ELBO derivation"; docs page 5.*
#
# The guide's central claim starts here: the log-ratio of the model's joint to the forward process, for *every*
# trajectory, splits into a decoder term, a prior term and one term per reverse step. SymPy proves it for any
# T and again, term by term, for concrete chains (T = 3 and T = 4) with arbitrary Gaussian reverse steps
# standing in for a network; taking expectations turns each term into a KL. Mean matching (E8) then shows
# what each KL asks of the network.
#
# Every formula comes from `elbo_lab/symbolic/telescoping.py` and `mean_matching.py`, proven by SymPy as this
# runs. Run: `python derivations/04_diffusion_elbo.py`, or open it as a notebook.

# %%
import numpy as np

from elbo_lab import teach
from elbo_lab.symbolic import reference

E7 = teach.report("telescoping")

# %% [markdown]
# ## Any T: Bayes turns each forward step around, the ratios telescope, and the terms regroup

# %%
teach.steps(E7, upto=4)

# %% [markdown]
# ## Expectations: the KL terms, and why the result bounds −log p_θ(x_0)

# %%
teach.steps(E7, upto=8)

# %% [markdown]
# ## The same identity on concrete chains (T = 3 and T = 4), term by term

# %%
teach.steps(E7, upto=14)

# %%
teach.finish(E7)

# %% [markdown]
# ## The identity on sampled trajectories
#
# A T = 3 chain (β = 0.1, 0.2, 0.3) and an arbitrary Gaussian "model" p_θ(x_{t−1}|x_t) = N(m_t x_t + c_t, s_t).
# For each of 10,000 forward trajectories the log-ratio equals decoder − prior − Σ denoising terms to rounding
# error (an identity, not an average); the average of the log-ratio estimates the exact ELBO `elbo_T3`.

# %%
rng = np.random.default_rng(0)
n, x0 = 10_000, 0.4
params = dict(beta_1=0.1, beta_2=0.2, beta_3=0.3, m_1=0.9, m_2=0.85, m_3=0.8, c_1=0.02, c_2=0.0, c_3=-0.01)
params.update(s_1=0.08, s_2=0.15, s_3=0.25)
xs = [np.full(n, x0)]
for t in (1, 2, 3):
    beta = params[f"beta_{t}"]
    mean = reference("forward_marginal", "step_mean", x_prev=xs[-1], beta=beta)
    var = reference("forward_marginal", "step_variance", beta=beta)
    xs.append(mean + np.sqrt(var) * rng.standard_normal(n))
traj = dict(x0=xs[0], x1=xs[1], x2=xs[2], x3=xs[3], **params)
log_ratio = reference("telescoping", "log_ratio_T3", **traj)
parts = (
    reference("telescoping", "recon_T3", **traj)
    - reference("telescoping", "prior_T3", **traj)
    - reference("telescoping", "denoise_T3_2", **traj)
    - reference("telescoping", "denoise_T3_3", **traj)
)
identity_err = float(np.abs(log_ratio - parts).max())
mc, se = log_ratio.mean(), log_ratio.std(ddof=1) / np.sqrt(n)
exact = float(reference("telescoping", "elbo_T3", x0=x0, **params))
teach.table(
    ["T = 3 chain, x_0 = 0.4", "nats"],
    [
        ["max over trajectories |log-ratio − (decoder − prior − Σ denoising)|", f"{identity_err:.1e}"],
        ["ELBO by Monte Carlo (mean log-ratio)", f"{mc:.4f} ± {se:.4f}"],
        ["ELBO exact (E7 export elbo_T3)", f"{exact:.4f}"],
    ],
)
assert identity_err < 1e-9 and abs(mc - exact) < 4 * se

# %% [markdown]
# ## E8 — mean matching: what one KL term asks of the network
#
# Each denoising KL compares two Gaussians with the same variance (when σ_t² = β̃_t): only the squared
# difference of means is left, so training a reverse step is regression of the posterior mean μ̃_t.

# %%
E8 = teach.report("mean_matching")
teach.steps(E8, upto=6)
teach.finish(E8)
kl_equal_var = teach.result(E8, "kl_equal_var")

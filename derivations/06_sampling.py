# %% [markdown]
# # Sampling: each DDPM update is a draw from the model's own reverse step (E11)
#
# *Guide section "Sampling", "DDPM sampling pseudocode"; docs page 7.*
#
# The sampling loop of the guide's pseudocode is not a heuristic: its mean is the model's μ_θ (E6's posterior
# mean with ε replaced by the prediction) and its noise makes it E2's reparameterized draw, so the loop samples
# p_θ(x_{t−1}|x_t) exactly, step by step. Then it runs the loop on data whose optimal denoiser is known, and
# compares what comes out with the model's exact distribution.
#
# Every formula comes from `elbo_lab/symbolic/sampling_step.py`, proven by SymPy as this runs.
# Run: `python derivations/06_sampling.py` (`--figures DIR` saves the figure), or open it as a notebook.

# %%
import matplotlib.pyplot as plt
import torch

from elbo_lab import teach
from elbo_lab.diffusion import p_sample_step
from elbo_lab.oracles.gaussian import GaussianData
from elbo_lab.schedule import NoiseSchedule

E11 = teach.report("sampling_step")

# %% [markdown]
# ## The update's mean is the model's mean

# %%
teach.steps(E11, upto=2)

# %% [markdown]
# ## The update is a reparameterized draw: its mean, variance and law

# %%
teach.steps(E11, upto=6)

# %% [markdown]
# ## The last step, and the choice of variance

# %%
teach.steps(E11, upto=8)
teach.finish(E11)
update = teach.result(E11, "step")

# %% [markdown]
# ## Running the sampler where the answer is known
#
# 2-D Gaussian data with the exact (MMSE) noise predictor ε̂(x_t, t) = E[ε | x_t] (`elbo_lab.oracles`): the
# reverse chain is linear-Gaussian, so the distribution of the sampler's output is known exactly
# (`model_marginal`). 4,000 chains of T = 200 steps of `p_sample_step`, the one implementation of E11's update.

# %%
data = GaussianData.random(2, seed=3)
schedule = NoiseSchedule.linear(200, scale_to_1000=True)
eps_hat = data.optimal_eps(schedule)
gen = torch.Generator().manual_seed(0)
n = 4_000
x = torch.randn(n, 2, generator=gen, dtype=torch.float64)
snapshots = {schedule.T: x.clone()}
for k in reversed(range(schedule.T)):
    z = torch.randn(n, 2, generator=gen, dtype=torch.float64)
    x = p_sample_step(schedule, x, k, eps_hat(x, k), z)
    if k in (100, 40, 10, 0):
        snapshots[k] = x.clone()
m_exact, S_exact = data.model_marginal(schedule)
m_hat = x.mean(0)
se = (torch.diag(S_exact) / n).sqrt()
rows = [
    [
        f"mean[{i}]",
        f"{float(m_hat[i]):.4f} ± {float(se[i]):.4f}",
        f"{float(m_exact[i]):.4f}",
        f"{float(data.mean[i]):.4f}",
    ]
    for i in range(2)
]
C = torch.cov(x.T)
rows += [
    [f"cov[{i},{j}]", f"{float(C[i, j]):.4f}", f"{float(S_exact[i, j]):.4f}", f"{float(data.cov[i, j]):.4f}"]
    for i, j in ((0, 0), (0, 1), (1, 1))
]
teach.table(["", "4,000 samples", "model's exact p_θ(x_0)", "data"], rows)
assert bool((abs(m_hat - m_exact) < 4 * se).all())

# %%
fig, axes = plt.subplots(1, 5, figsize=(11, 2.5), sharex=True, sharey=True)
truth = data.sample(n, generator=torch.Generator().manual_seed(1))
for ax, k in zip(axes, (schedule.T, 100, 40, 10, 0)):
    pts = snapshots[k].numpy()
    ax.scatter(pts[:, 0], pts[:, 1], s=1, c="C0", alpha=0.25, label="sampler")
    ax.scatter(truth[:1000, 0], truth[:1000, 1], s=1, c="C1", alpha=0.5, label="data")
    ax.set_title("x_T ~ N(0, I)" if k == schedule.T else f"t = {k}" if k else "x_0 (output)", fontsize=9)
axes[0].set_xlim(-3, 3)
axes[0].set_ylim(-3, 3)
axes[-1].legend(fontsize=7, markerscale=6, loc="lower right")
fig.suptitle("ancestral sampling with the exact denoiser: from noise to the data distribution", fontsize=9)
fig.tight_layout()
teach.figure(fig, "sampling_trajectory")

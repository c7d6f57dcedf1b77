# %% [markdown]
# # From the bound to the ε-loss: the weight w_t (E9) and L_simple (E10)
#
# *Guide sections "Simplified diffusion objective", "Noise prediction loss"; docs page 5.*
#
# Each KL term of the bound compares two Gaussian means (E8). Writing both means in the ε form of E6 turns
# the difference of means into a difference of noises: the KL becomes a *weighted* squared error between the
# true noise and the network's prediction. L_simple drops the weights. This notebook derives the weight, its
# signal-to-noise form, what dropping it does and does not change, and draws w_t for two schedules.
#
# Every formula comes from `elbo_lab/symbolic/eps_weight.py` and `simple_loss.py`, proven by SymPy as it runs.
# Run: `python derivations/05_simplified_objective.py` (`--figures DIR` saves the figure), or as a notebook.

# %%
import matplotlib.pyplot as plt
import numpy as np

from elbo_lab import teach
from elbo_lab.diffusion import eps_weight
from elbo_lab.schedule import NoiseSchedule
from elbo_lab.symbolic import reference

E9 = teach.report("eps_weight")

# %% [markdown]
# ## Both means in the ε form
#
# x_0 is eliminated with E5's draw; the posterior mean and the model's mean then differ only through ε − ε_θ.

# %%
teach.steps(E9, upto=3)

# %% [markdown]
# ## The KL as a weighted ε error
#
# Mean matching (E8) turns the squared mean difference into the KL. The weight simplifies at σ_t² = β̃_t and
# has a compact signal-to-noise form; the first step is special.

# %%
teach.steps(E9, upto=7)
teach.finish(E9)

# %% [markdown]
# ## L_simple: the same terms without the weights

# %%
E10 = teach.report("simple_loss")
teach.steps(E10, upto=2)

# %% [markdown]
# What dropping the weights keeps: each step's best prediction is the same (the conditional mean of the noise),
# so a network flexible enough to be optimal at every step is optimal for both losses.

# %%
teach.steps(E10, upto=5)

# %% [markdown]
# What it changes: the balance between steps, because the weights are far from constant.

# %%
teach.steps(E10, upto=7)
teach.finish(E10)

# %% [markdown]
# ## The weights w_t on real schedules
#
# The export `weight_snr` evaluated on the linear and cosine schedules (T = 1000), next to the numeric
# implementation `diffusion.eps_weight` that the bound uses. L_simple weighs every step by 1.

# %%
weight_snr = teach.result(E9, "weight_snr")
curves, rows = {}, []
for schedule in (NoiseSchedule.linear(1000), NoiseSchedule.cosine(1000)):
    snr = reference("eps_weight", "snr", alpha_bar=schedule.alpha_bars.numpy())
    w_sympy = reference("eps_weight", "weight_snr", snr_prev=snr[:-1], snr=snr[1:])  # t = 2..T
    w_code = eps_weight(schedule, "posterior").numpy()[1:]
    rel = float(np.max(np.abs(w_code - w_sympy) / w_sympy))
    assert rel < 1e-9, rel
    curves[schedule.name] = w_sympy
    rows.append([schedule.name] + [f"{w_sympy[t - 2]:.3g}" for t in (2, 10, 100, 500, 1000)] + [f"{rel:.1e}"])
teach.table(["schedule", "w_2", "w_10", "w_100", "w_500", "w_1000", "max rel. |code − SymPy|"], rows)

# %%
fig, ax = plt.subplots(figsize=(6.0, 3.4))
ts = np.arange(2, 1001)
for name, w in curves.items():
    ax.plot(ts, w, label=f"w_t, {name}")
ax.axhline(1.0, color="k", ls="--", lw=1, label="L_simple's weight 1")
ax.set_xscale("log")
ax.set_yscale("log")
ax.set_xlabel("t")
ax.set_ylabel("weight of ‖ε − ε_θ‖² (nats per unit)")
ax.set_title("w_t = ½ (SNR(t−1)/SNR(t) − 1), σ_t² = β̃_t", fontsize=10)
ax.legend(fontsize=8)
teach.figure(fig, "eps_weights_by_schedule")

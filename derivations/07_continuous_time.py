# %% [markdown]
# # Beyond the guide: the T → ∞ limit of the bound (E12)
#
# *Docs page 8 (continuous time, VDM — Kingma et al. 2021).*
#
# In signal-to-noise form each term of the bound is half the drop in SNR over the step times the x_0
# prediction error. As the number of steps grows the sum becomes an integral, and a change of variables to
# v = SNR shows that the continuous-time bound depends on the noise schedule only through its two end points.
# For Gaussian data the optimal denoiser's error is known, and the integral has a closed form.
#
# Every formula comes from `elbo_lab/symbolic/continuous_time.py`, proven by SymPy as this runs.
# Run: `python derivations/07_continuous_time.py` (`--figures DIR` saves the figure), or open it as a notebook.

# %%
import matplotlib.pyplot as plt
import numpy as np

from elbo_lab import teach
from elbo_lab.symbolic import reference

E12 = teach.report("continuous_time")

# %% [markdown]
# ## Each term in SNR form

# %%
teach.steps(E12, upto=3)

# %% [markdown]
# ## The limit: a Riemann sum becomes an integral over SNR

# %%
teach.steps(E12, upto=7)

# %% [markdown]
# ## Gaussian data: the integral in closed form

# %%
teach.steps(E12, upto=9)
teach.finish(E12)
L_inf = teach.result(E12, "gaussian_loss")

# %% [markdown]
# ## The discrete bound approaches the limit
#
# x_0 ~ N(0, 1) with the optimal denoiser, log SNR running linearly from 6 to −6. For each T the discrete bound's
# diffusion terms are the sum of `term_x0_form` over the steps (with the optimal error `gaussian_mmse` at each
# step's SNR); the limit is `gaussian_loss`. The difference shrinks like 1/T.

# %%
snr_max, snr_min = float(np.exp(6.0)), float(np.exp(-6.0))
limit = float(reference("continuous_time", "gaussian_loss", snr_min=snr_min, snr_max=snr_max))
rows, Ts, sums = [], [2, 5, 10, 30, 100, 300, 1000], []
for T in Ts:
    snr = np.exp(np.linspace(6.0, -6.0, T + 1))  # SNR(0), SNR(1/T), ..., SNR(1)
    err2 = reference("continuous_time", "gaussian_mmse", snr=snr[1:])
    total = float(reference("continuous_time", "term_x0_form", snr_prev=snr[:-1], snr=snr[1:], err2=err2).sum())
    sums.append(total)
    rows.append([T, f"{total:.6f}", f"{total - limit:.2e}", f"{T * (total - limit):.4f}"])
teach.table(["T", "Σ terms (nats)", "− L_∞", "T·(Σ − L_∞)"], rows)
teach.note(f"L_∞ = {limit:.6f} nats (E12 export gaussian_loss)")
assert all(a > b > limit for a, b in zip(sums, sums[1:]))  # from above, monotonically
assert abs(Ts[-1] * (sums[-1] - limit) / (Ts[-2] * (sums[-2] - limit)) - 1) < 0.02  # the error ∝ 1/T

# %%
fig, ax = plt.subplots(figsize=(5.5, 3.2))
ax.plot(Ts, np.array(sums) - limit, "o-")
ax.set_xscale("log")
ax.set_yscale("log")
ax.set_xlabel("number of steps T")
ax.set_ylabel("discrete bound − L_∞ (nats)")
ax.set_title("Gaussian data, optimal denoiser: the sum converges to the integral", fontsize=9)
teach.figure(fig, "continuous_time_limit")

# %% [markdown]
# # The forward process: q(x_t | x_0) in one jump (E5)
#
# *Guide section "Forward diffusion noise process"; docs page 3.*
#
# Each forward step shrinks the image a little and adds a little Gaussian noise. The fact that makes
# training cheap is that *any* step can be reached from x_0 in one draw. This notebook derives it with SymPy:
# two Gaussian steps merge into one by a Gaussian integral, unrolling three steps shows the pattern, and an
# induction proves it for every t. Then it noises a real digit.
#
# Every formula below is produced by the derivation in `elbo_lab/symbolic/forward_marginal.py` and proven by
# a SymPy computation when this runs; nothing is retyped here. Run it as a script
# (`python derivations/02_forward_diffusion.py`, add `--figures DIR` to save the figure, `--latex` for LaTeX)
# or open it as a notebook (jupytext).

# %%
import matplotlib.pyplot as plt
import numpy as np
import torch

from elbo_lab import teach
from elbo_lab.data import load_digits
from elbo_lab.diffusion import q_sample
from elbo_lab.schedule import NoiseSchedule
from elbo_lab.symbolic import reference

E5 = teach.report("forward_marginal")

# %% [markdown]
# ## One step, and two steps merged
#
# A forward step is a scaled copy of the previous value plus fresh noise. To go two steps at once we
# integrate out the middle value: the integrand is the exponential of a quadratic, so the integral is the
# Gaussian integral (step 2), and what is left is again a Gaussian log-density (steps 3–5).

# %%
teach.steps(E5, upto=2)

# %%
teach.steps(E5, upto=4)

# %%
teach.steps(E5, upto=5)

# %% [markdown]
# ## Unrolling three steps, then induction
#
# Applying the merge three times from x_0 shows that the α's enter only through their product ᾱ_t.
# Base case and inductive step then prove the closed form for every t.

# %%
teach.steps(E5, upto=6)

# %%
teach.steps(E5, upto=9)

# %% [markdown]
# ## Sampling x_t directly
#
# The closed form is a reparameterized draw (E2): x_t is √ᾱ_t x_0 plus √(1 − ᾱ_t) times standard noise.
# Solving it for the noise is what turns a prediction of x_0 into a prediction of ε later on.

# %%
teach.steps(E5, upto=10)
sample = teach.result(E5, "sample")
teach.finish(E5)

# %% [markdown]
# ## A digit, noised at several t
#
# The DDPM linear schedule (T = 1000, β from 10⁻⁴ to 0.02). `q_sample` is the one numeric implementation of the
# draw; it is compared here with the lambdified SymPy export `sample` on the same noise.

# %%
schedule = NoiseSchedule.linear(1000)
x0 = load_digits(dtype=torch.float64).test[3]  # one test digit in [-1, 1], shape (1, 8, 8)
eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
ts = [1, 50, 100, 250, 500, 1000]  # the paper's t; the code's index is k = t - 1
rows, images = [], []
for t in ts:
    abar = float(schedule.alpha_bars[t - 1])
    xt = q_sample(schedule, x0, t - 1, eps)
    exact = reference("forward_marginal", "sample", x0=x0.numpy(), eps=eps.numpy(), alpha_bar=abar)
    agree = float(np.abs(xt.numpy() - exact).max())
    var = float(reference("forward_marginal", "variance", alpha_bar=abar))
    rows.append([t, f"{abar:.4f}", f"{abar**0.5:.3f}", f"{var**0.5:.3f}", f"{abar / (1 - abar):.3g}", f"{agree:.1e}"])
    images.append(xt[0].numpy())
teach.table(["t", "ᾱ_t", "signal √ᾱ_t", "noise √(1−ᾱ_t)", "SNR(t)", "|q_sample − SymPy|"], rows)
assert max(float(r[-1]) for r in rows) < 1e-12  # the numeric code is the derivation's formula

# %%
fig, axes = plt.subplots(1, len(ts), figsize=(1.6 * len(ts), 2.0))
for ax, t, img in zip(axes, ts, images):
    ax.imshow(img, cmap="gray_r", vmin=-2.0, vmax=2.0)
    ax.set_title(f"t = {t}", fontsize=9)
    ax.axis("off")
fig.suptitle("x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε on a test digit (linear schedule, T = 1000)", fontsize=9)
teach.figure(fig, "forward_noising_digit")

# %% [markdown]
# ## The marginal, checked by simulation
#
# Running the chain step by step (t single Gaussian steps) must give the same law as the one-jump draw.
# 20,000 chains of one pixel value, compared with the closed form's mean and variance (±4 standard errors).

# %%
n, t_check, x_pixel = 20_000, 250, 0.5
gen = torch.Generator().manual_seed(1)
x = torch.full((n,), x_pixel, dtype=torch.float64)
for k in range(t_check):
    beta = schedule.betas[k]
    x = (1 - beta).sqrt() * x + beta.sqrt() * torch.randn(n, generator=gen, dtype=torch.float64)
abar = float(schedule.alpha_bars[t_check - 1])
mean_exact = float(reference("forward_marginal", "mean", x0=x_pixel, alpha_bar=abar))
var_exact = float(reference("forward_marginal", "variance", alpha_bar=abar))
mean_se = (var_exact / n) ** 0.5
var_se = var_exact * (2 / (n - 1)) ** 0.5
teach.table(
    ["", "chain of 250 steps", "closed form", "|difference| / stderr"],
    [
        ["mean", f"{x.mean():.4f} ± {mean_se:.4f}", f"{mean_exact:.4f}", f"{abs(x.mean() - mean_exact) / mean_se:.2f}"],
        ["variance", f"{x.var():.4f} ± {var_se:.4f}", f"{var_exact:.4f}", f"{abs(x.var() - var_exact) / var_se:.2f}"],
    ],
)
assert abs(x.mean() - mean_exact) < 4 * mean_se and abs(x.var() - var_exact) < 4 * var_se

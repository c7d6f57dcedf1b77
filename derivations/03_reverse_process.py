# %% [markdown]
# # The reverse process: the posterior q(x_{t-1} | x_t, x_0) by completing the square (E6)
#
# *Guide section "Reverse diffusion process"; docs page 4.*
#
# The model learns to undo one forward step at a time. What should it aim for? Given x_0, the reverse of a
# forward step is itself Gaussian and known in closed form. SymPy derives it from Bayes' rule: the log of the
# numerator is a quadratic in x_{t-1}, completing the square reads off its variance β̃_t and mean μ̃_t, and the
# mean can be written with x_0 or with the noise ε — the form a noise-predicting network uses.
#
# Every formula is produced by `elbo_lab/symbolic/posterior.py` and proven by SymPy when this runs.
# Run: `python derivations/03_reverse_process.py` (`--figures DIR` saves the figure), or open it as a notebook.

# %%
import matplotlib.pyplot as plt
import numpy as np
import torch

from elbo_lab import teach
from elbo_lab.data import load_digits
from elbo_lab.diffusion import q_posterior, q_sample
from elbo_lab.schedule import NoiseSchedule
from elbo_lab.symbolic import reference

E6 = teach.report("posterior")

# %% [markdown]
# ## Bayes' rule, and the shape of the numerator
#
# The denominator q(x_t | x_0) is E5's marginal and does not depend on x_{t-1}: everything about the
# posterior's shape is in the numerator, a product of two Gaussians in x_{t-1}.

# %%
teach.steps(E6, upto=2)

# %% [markdown]
# ## Completing the square
#
# A quadratic A x² + B x + C with A < 0 is a Gaussian log-density up to a constant: variance −1/(2A),
# mean −B/(2A). SymPy compares coefficients to prove it, then simplifies the two to the textbook forms.

# %%
teach.steps(E6, upto=5)

# %% [markdown]
# ## The mean in terms of the noise
#
# E5's draw, solved for x_0 and substituted, gives the ε form of μ̃_t. A network that predicts ε therefore
# predicts the posterior mean.

# %%
teach.steps(E6, upto=7)

# %% [markdown]
# ## Nothing lost: the normalising constants agree too, and the forms the code uses

# %%
teach.steps(E6, upto=8)
teach.finish(E6)

# %% [markdown]
# ## The posterior mean is a blend of x_0 and x_t
#
# μ̃_t is a weighted sum of the clean image and the noisy one. The two weights are exports of the derivation;
# below they are evaluated on the linear schedule (T = 1000). At t = 2 the mean is about half x_0, half x_t;
# the weight of x_0 then falls quickly (it is 2 % by t = 100): one step back from a noisy x_t stays close to x_t.

# %%
coef_x0 = teach.result(E6, "coef_x0")
coef_xt = teach.result(E6, "coef_xt")

schedule = NoiseSchedule.linear(1000)
beta = schedule.betas.numpy()
abar_prev = schedule.alpha_bars_prev.numpy()
w_x0 = reference("posterior", "coef_x0", beta=beta, alpha_bar_prev=abar_prev)
w_xt = reference("posterior", "coef_xt", beta=beta, alpha_bar_prev=abar_prev)
ts = np.arange(1, schedule.T + 1)
ratio = reference("posterior", "variance", beta=beta, alpha_bar_prev=abar_prev) / beta  # β̃_t / β_t
teach.table(
    ["t", "weight of x_0", "weight of x_t", "β̃_t / β_t"],
    [
        [
            t,
            f"{w_x0[t - 1]:.4f}",
            f"{w_xt[t - 1]:.4f}",
            f"{ratio[t - 1]:.4f}",
        ]
        for t in (2, 10, 100, 500, 1000)
    ],
)

# %% [markdown]
# The numeric implementation `q_posterior` (what the bound and the training code use) against the SymPy
# export `mean`, on a real digit at t = 100:

# %%
x0 = load_digits(dtype=torch.float64).test[3]
eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
t = 100
xt = q_sample(schedule, x0, t - 1, eps)
mean, var = q_posterior(schedule, x0, xt, t - 1)
exact = reference("posterior", "mean", x0=x0.numpy(), xt=xt.numpy(), beta=beta[t - 1], alpha_bar_prev=abar_prev[t - 1])
err = float(np.abs(mean.numpy() - exact).max())
teach.note(f"max |q_posterior − SymPy mean| at t = {t}: {err:.1e}")
assert err < 1e-12

# %%
fig = plt.figure(figsize=(9.5, 2.8))
ax = fig.add_axes([0.06, 0.18, 0.36, 0.7])
ax.plot(ts[1:], w_x0[1:], label="weight of x_0")
ax.plot(ts[1:], w_xt[1:], label="weight of x_t")
ax.set_xscale("log")
ax.set_xlabel("t")
ax.set_title("μ̃_t = (weight of x_0)·x_0 + (weight of x_t)·x_t", fontsize=9)
ax.legend(fontsize=8)
x_prev = mean + var.sqrt() * torch.randn(x0.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
panels = [(x0, "x_0"), (xt, f"x_t, t = {t}"), (mean, "μ̃_t (posterior mean)"), (x_prev, "a draw of x_{t−1}")]
for i, (img, title) in enumerate(panels):
    a = fig.add_axes([0.47 + i * 0.132, 0.18, 0.12, 0.7])
    a.imshow(img[0].numpy(), cmap="gray_r", vmin=-1.5, vmax=1.5)
    a.set_title(title, fontsize=8)
    a.axis("off")
teach.figure(fig, "posterior_blend")

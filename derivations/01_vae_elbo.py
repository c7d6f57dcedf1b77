# %% [markdown]
# # The VAE route (guide section "The VAE route")
#
# E1 the Gaussian KL from its integral, E2 reparameterization, E3 the ELBO identities, E4 the
# linear-Gaussian model with its exact likelihood and posterior. Run: `python derivations/01_vae_elbo.py`
# (add `--latex` for LaTeX). Each step is proven by a SymPy computation; ✗ marks a step that failed.

# %%
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _runner import main, show  # noqa: F401

# %%
if __name__ == "__main__":
    main("gaussian_kl", "reparameterization", "vae_elbo", "linear_gaussian")

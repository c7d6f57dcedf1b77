# %% [markdown]
# # Sampling (guide section "Sampling")
#
# E11 the DDPM sampling step x_{t−1} = (x_t − β_t/√(1−ᾱ_t) ε_θ)/√α_t + σ_t z is a reparameterized draw from
# p_θ(x_{t−1}|x_t) = N(μ_θ, σ_t²): its mean is the ε-form posterior mean with ε replaced by ε_θ, and its law
# follows from E2. Run: `python derivations/06_sampling.py` (add `--latex` for LaTeX). Each step is proven by a
# SymPy computation; ✗ marks a step that failed.

# %%
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _runner import main, show  # noqa: F401

# %%
if __name__ == "__main__":
    main("sampling_step")

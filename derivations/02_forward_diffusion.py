# %% [markdown]
# # Forward diffusion (guide section "Forward diffusion noise process")
#
# E5 the forward marginal q(x_t|x_0) = N(√ᾱ_t x_0, 1 - ᾱ_t): two Gaussian steps merged by the convolution
# integral, the closed form read off a t = 3 unrolling, and the induction (base case and inductive step).
# Run: `python derivations/02_forward_diffusion.py` (add `--latex` for LaTeX). Each step is proven by a SymPy
# computation; ✗ marks a step that failed.

# %%
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _runner import main, show  # noqa: F401

# %%
if __name__ == "__main__":
    main("forward_marginal")

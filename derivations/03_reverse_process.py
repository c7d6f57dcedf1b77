# %% [markdown]
# # The reverse process (guide section "Reverse diffusion process")
#
# E6 the forward-process posterior q(x_{t-1}|x_t, x_0) = N(μ̃_t, β̃_t) by Bayes and completing the square, with
# μ̃_t in x_0 form and in ε form, and the normalising constant accounted for exactly.
# Run: `python derivations/03_reverse_process.py` (add `--latex` for LaTeX). Each step is proven by a SymPy
# computation; ✗ marks a step that failed.

# %%
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _runner import main, show  # noqa: F401

# %%
if __name__ == "__main__":
    main("posterior")

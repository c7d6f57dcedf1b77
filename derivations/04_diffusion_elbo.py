# %% [markdown]
# # The diffusion ELBO (guide section "Diffusion ELBO derivation")
#
# E7 the decomposition L_0 - L_T - Σ L_{t-1} as an exact identity of log-densities, obtained by Bayes and
# telescoping and checked for concrete chains T = 3 and T = 4 (which terms cancel is listed), then its
# expectation as KLs; E8 mean matching. Run: `python derivations/04_diffusion_elbo.py` (add `--latex` for
# LaTeX). Each step is proven by a SymPy computation; ✗ marks a step that failed.

# %%
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _runner import main, show  # noqa: F401

# %%
if __name__ == "__main__":
    main("telescoping", "mean_matching")

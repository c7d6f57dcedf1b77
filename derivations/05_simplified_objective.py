# %% [markdown]
# # Simplified diffusion objective (guide section "Simplified diffusion objective")
#
# E9 the ε-parameterization of L_{t−1}: its weight β_t²/(2σ_t² α_t (1−ᾱ_t)) and, with σ_t² = β̃_t, the SNR form
# ½(SNR(t−1)/SNR(t) − 1); E10 L_simple, the same sum with the weights dropped -- the per-step minimiser is
# unchanged, the objective is no longer a bound. (E8 mean matching, which E9 builds on, is printed by 04.)
# Run: `python derivations/05_simplified_objective.py` (add `--latex` for LaTeX). Each step is proven by a SymPy
# computation; ✗ marks a step that failed.

# %%
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _runner import main, show  # noqa: F401

# %%
if __name__ == "__main__":
    main("eps_weight", "simple_loss")

# %% [markdown]
# # Beyond the guide: the continuous-time bound (Variational Diffusion Models)
#
# E12 the T → ∞ limit of the bound in SNR form: each term becomes ½(SNR(s) − SNR(t))·E‖x_0 − x̂_0‖², the sum a
# Riemann sum converging to −½∫_0^1 SNR′(t) E‖x_0 − x̂_0‖² dt, and the substitution v = SNR(t) shows that it
# depends on the schedule only through SNR(0) and SNR(1). Run: `python derivations/07_continuous_time.py` (add
# `--latex` for LaTeX). Each step is proven by a SymPy computation; ✗ marks a step that failed.

# %%
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _runner import main, show  # noqa: F401

# %%
if __name__ == "__main__":
    main("continuous_time")

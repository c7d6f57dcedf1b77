"""The number to cite: one quotable line (and the same fields as a dict) for a DDPM bound.

    NLL ≤ 1.23456 ± 0.00123 bits/dim (1 s.e.; 95% CI [1.23215, 1.23697]), importance (M = 64 steps/image),
    360 images, 24,120 network evaluations, T = 1000, posterior variance (discretized decoder on 17 levels,
    epsilon prediction, x̂_0 not clipped)

What the ± means: the standard error of the dataset-mean bound *of these images* from the estimator's own
noise (sampled steps and ε draws; :meth:`elbo_lab.bound.BoundResult.mean_stderr` ``"estimator"``), and the 95%
interval is Student t with the Welch–Satterthwaite degrees of freedom (:meth:`BoundResult.mean_ci`), whose
coverage is measured in benchmarks/bench_bound.py part (c).  The spread between images (the error of the mean as
an estimate over the data distribution) is a separate number, given in :func:`citation` as
``stderr_images``.  "NLL ≤": the bound is a negative-log-likelihood *upper* bound (the negative ELBO).

One formatter, used by ``elbo-lab bound`` and by the report's headline.  Test: tests/test_bound.py
(``test_citation_line_and_fields``).
"""

from __future__ import annotations

import math

__all__ = ["COVERAGE_95", "citation", "citation_line", "interval_covers"]

#: Measured coverage of the nominal 95% interval of the dataset mean (benchmarks/bench_bound.py part (c): 200
#: repetitions x 4 images, M = 8 / 32 / 128, on the Gaussian oracle and on trained digits DDPMs): min, max over
#: M and the models (benchmarks/results/bound_coverage.txt).  Only estimators whose interval was measured to
#: cover (>= 93% at every M tried) are quoted as a 95% CI; for the others the line gives no interval and says
#: why.  ``full``'s ε-noise s.e. was compared with the spread over 5 seeds instead (0.68x the reported s.e.:
#: conservative).  Keys: :func:`estimator_key`.
COVERAGE_95: dict[str, tuple[float, float] | None] = {
    "full": None,  # two ε draws per step: s.e. checked against the seed spread, not a coverage table
    "importance": (0.935, 0.965),  # i.i.d. draws from the pilot proposal: covers (per image 0.944–0.964)
    "importance (stratified)": (0.955, 0.985),  # stratified_importance=True: covers, conservatively
    "stratified": (0.760, 0.890),  # undercovers
    "uniform": (0.525, 0.835),  # undercovers
}


def estimator_key(result) -> str:
    """The estimator's name as :data:`COVERAGE_95` knows it ("importance (stratified)" for stratified importance)."""
    if result.estimator == "importance" and getattr(result, "stratified_importance", False):
        return "importance (stratified)"
    return result.estimator


def interval_covers(estimator: str) -> bool:
    """True when the estimator's 95% interval was measured to cover (``COVERAGE_95``; ``full``: see its note)."""
    cov = COVERAGE_95.get(estimator)
    return estimator == "full" or (cov is not None and cov[0] >= 0.93)


def _model_words(model) -> str:
    if model is None:
        return "model convention not recorded"
    d = model.describe()  # "posterior variance, discretized decoder ..., ..."
    head, _, rest = d.partition(", ")
    return f"{head} ({rest})" if rest else head


def citation(result, *, version: str | None = None, commit: str | None = None) -> dict:
    """The citation fields of a :class:`elbo_lab.bound.BoundResult` (converted to bits/dim): JSON-ready, NaN → None.

    Keys: quantity, units, value, stderr, ci95 [a, b] (None where the estimator's interval was not measured to
    cover: ``ci95_trusted`` False), ci_method, dof, stderr_images, estimator, num_samples, eps_draws,
    decoder_draws, take_all_steps, n_images, n_evals, T, model (the ModelSpec's dict), version, git_commit, line.
    """
    r = result.bits_per_dim()
    key = estimator_key(r)
    se = r.mean_stderr("estimator")
    trusted = interval_covers(key)
    lo, hi = r.mean_ci(0.95) if math.isfinite(se) else (float("nan"), float("nan"))
    T = int(r.terms.shape[1])
    out = {
        "quantity": "negative-log-likelihood bound (NLL <= value; the negative ELBO)",
        "units": "bits/dim",
        "value": r.mean(),
        "stderr": _num(se),
        "ci95": [_num(lo), _num(hi)] if trusted and math.isfinite(se) else None,
        "ci_method": "Student t, Welch-Satterthwaite dof, estimator noise for these images",
        "ci95_coverage_measured": list(COVERAGE_95[key]) if COVERAGE_95.get(key) else None,
        "ci95_trusted": trusted,
        "dof": _num(r.mean_dof()),
        "stderr_images": _num(r.mean_stderr("images")) if r.N >= 2 else None,
        "estimator": key,
        "num_samples": r.num_samples,
        "eps_draws": r.eps_draws,
        "decoder_draws": r.decoder_draws,
        "take_all_steps": list(getattr(r, "take_all", []) or []),
        "n_images": r.N,
        "n_evals": r.n_evals,
        "T": T,
        "model": r.model.to_dict() if r.model is not None else None,
        "version": version,
        "git_commit": commit,
    }
    out["line"] = citation_line(result)
    return out


def citation_line(result) -> str:
    """ "NLL ≤ X ± Y bits/dim (1 s.e.; 95% CI [a, b]), estimator, N images, M network evaluations, T, convention"."""
    r = result.bits_per_dim()
    key = estimator_key(r)
    se = r.mean_stderr("estimator")
    if r.estimator == "full":
        est = f"full ({r.eps_draws} ε draws per step)" if r.eps_draws else "full"
    elif key == "importance (stratified)":
        est = f"importance (stratified, M = {r.num_samples} steps/image)"
    else:
        est = f"{key} (M = {r.num_samples} steps/image)"
    if math.isfinite(se) and not interval_covers(key):
        a, b = COVERAGE_95[key]
        unc = (
            f"± {se:.5f} bits/dim (1 s.e., too small: no 95% CI given -- this estimator's nominal 95% interval "
            f"covered only {a:.0%}–{b:.0%} when measured; cite importance or full instead)"
        )
    elif math.isfinite(se):
        lo, hi = r.mean_ci(0.95)
        unc = f"± {se:.5f} bits/dim (1 s.e.; 95% CI [{lo:.5f}, {hi:.5f}])"
    else:
        unc = "bits/dim (estimator noise not estimated: one ε draw per step)"
    return (
        f"NLL ≤ {r.mean():.5f} {unc}, {est}, {r.N:,} images, {r.n_evals:,} network evaluations, "
        f"T = {r.terms.shape[1]}, {_model_words(r.model)}"
    )


def _num(v):
    return v if v is not None and math.isfinite(v) else None

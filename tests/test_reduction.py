"""The per-step tables behind the report's figures (elbo_lab.reduction) against the engine, and the facts the
captions state (elbo_lab.figures.gap_facts, reduction.mass_summary) against the data they summarise."""

import math

import numpy as np
import pytest
import torch

from elbo_lab.bound import variational_bound
from elbo_lab.checks.model_claims import _tiny_ddpm
from elbo_lab.data import load_digits
from elbo_lab.figures import gap_facts, gap_phrase
from elbo_lab.oracles import GaussianData, gap_vs_T
from elbo_lab.reduction import mass_summary, oracle_per_step_table, per_step_table
from elbo_lab.schedule import NoiseSchedule

F64 = torch.float64


@pytest.fixture(scope="module")
def digits():
    return load_digits(dtype=F64).test[:24]


@pytest.mark.parametrize(
    "param,learned,variance",
    [("categorical", True, "learned"), ("eps", False, "posterior"), ("eps", False, "beta")],
)
def test_weighted_mse_plus_constant_is_the_engines_term(digits, param, learned, variance):
    """w_t·MSE_t (the model's own σ_t², per pixel when learned) + the variance constant = the engine's KL term,
    pair by pair (so also in the per-step means), for t ≥ 2."""
    model = _tiny_ddpm(3, param=param, learned=learned)
    tab = per_step_table(model, model.schedule, digits, variance=variance, levels=17, generator=1)
    term, wmse, const = (np.asarray(tab[k][1:], dtype=float) for k in ("term", "wmse", "const"))
    assert np.max(np.abs(wmse + const - term) / np.abs(term)) < 1e-9
    if variance == "posterior":  # σ² = β̃: no variance constant
        assert np.max(np.abs(const)) < 1e-12
    else:
        assert np.min(const) > 0
    assert tab["t"] == list(range(1, model.schedule.T + 1))
    assert tab["variance"] == variance


def test_table_total_is_the_full_bound(digits):
    """L_T + Σ_t term of the table = the full estimator's bound of the same model on the same images (an
    independent run of variational_bound with other random numbers: |Δ| < 4 s.e. of the per-image difference)."""
    model = _tiny_ddpm(4, param="categorical", learned=True)
    tab = per_step_table(model, model.schedule, digits, variance="learned", levels=17, generator=2)
    ref = variational_bound(
        model,
        model.schedule,
        digits,
        variance="learned",
        levels=17,
        generator=99,
        bits_per_dim=True,
        model_dtype=F64,
    )
    d = np.asarray(tab["per_image_total"]) - ref.total.numpy()
    assert abs(d.mean()) < 4 * d.std(ddof=1) / math.sqrt(len(d))
    total = tab["prior"] + sum(tab["term"])
    assert tab["total"] == pytest.approx(total, rel=1e-12)
    assert tab["decoder"] == tab["term"][0]
    assert tab["n_evals"] == len(digits) * model.schedule.T
    # the wrong σ² (β̃ for a learned-variance model) gives a different bound: the test above can tell
    wrong = variational_bound(
        model,
        model.schedule,
        digits,
        variance="posterior",
        levels=17,
        generator=99,
        bits_per_dim=True,
        model_dtype=F64,
    )
    dw = np.asarray(tab["per_image_total"]) - wrong.total.numpy()
    assert abs(dw.mean()) > 4 * dw.std(ddof=1) / math.sqrt(len(dw))


def test_oracle_table_equals_its_closed_form_bound():
    """For the Gaussian oracle w_t·MSE_t + c_t (MMSE error × E9 weight) equals the closed-form expected term (the
    mean-matching KL at the RMS error, another route); the total is the expected bound, above the exact NLL."""
    data = GaussianData.random(6, seed=1)
    for variance in ("posterior", "beta"):
        s = NoiseSchedule.cosine(200)
        tab = oracle_per_step_table(data, s, variance)
        term, wmse, const = (np.asarray(tab[k][1:], dtype=float) for k in ("term", "wmse", "const"))
        assert np.max(np.abs(wmse + const - term) / np.abs(term)) < 1e-9
        ob = data.expected_bound(s, variance)
        assert tab["total"] == pytest.approx(float(ob.bits_per_dim()), rel=1e-12)
        assert tab["total"] == pytest.approx(tab["prior"] + sum(tab["term"]), rel=1e-12)
        assert tab["total"] > tab["exact_nll"] > tab["entropy"] - 1e-12
        assert tab["l_simple"] == pytest.approx(float(data.eps_mse(s).mean()) / data.dim, rel=1e-12)


def test_mass_summary_matches_the_terms():
    tab = {"t": list(range(1, 11)), "term": [1.0] + [0.5] * 9, "total": 6.0}  # L_T = 0.5
    m = mass_summary(tab, ranges=((2, 4),))
    assert m["ranges"][0]["bits_per_dim"] == pytest.approx(1.5)
    assert m["ranges"][0]["share"] == pytest.approx(0.25)
    assert m["sum_terms"] == pytest.approx(5.5)
    assert m["t_50"] == 5 and m["t_90"] == 9  # cumulative 1, 1.5, ..., first ≥ 2.75 at t = 5; ≥ 4.95 at t = 9


def test_gap_title_facts_match_the_oracle():
    """Figure 5's title: σ² = β closes as T grows, σ² = β̃ does not (issue 10: it said 'the gap closes' for all)."""
    data = GaussianData.random(4, seed=0)
    Ts = [10, 100, 1000, 10000]
    beta = [r["gap_model_bpd"] for r in gap_vs_T(data, NoiseSchedule.cosine, Ts, "beta")]
    post = [r["gap_model_bpd"] for r in gap_vs_T(data, NoiseSchedule.cosine, Ts, "posterior")]
    fb, fp = gap_facts(Ts, beta), gap_facts(Ts, post)
    assert fb["closes"] and fb["last"] < 0.01 * fb["first"]
    assert not fp["closes"] and fp["levels_off"] and fp["last"] > 0.5 * fp["first"]
    assert "does not close, levels off" in gap_phrase("β̃", fp) and "closes" in gap_phrase("β", fb)
    # the linear schedule's β̃ curve falls 20× from T = 10 but levels off too: it must not be called closing
    lin = [r["gap_model_bpd"] for r in gap_vs_T(data, NoiseSchedule.linear, Ts, "posterior")]
    fl = gap_facts(Ts, lin)
    assert fl["ratio"] < 0.1 and not fl["closes"] and fl["levels_off"]
    assert fp["last"] == pytest.approx(post[-1])

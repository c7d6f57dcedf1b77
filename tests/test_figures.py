"""The figure functions draw what their table says: x is the table's real t (not an index), y its columns; the
table is written beside the picture with its units."""

import json

import numpy as np
import pytest

from elbo_lab import figures as F


@pytest.fixture
def table():
    t = [1, 2, 3, 5, 9, 17, 40, 120, 400, 1000]  # not consecutive: an index-based axis would show 1..10
    n = len(t)
    rng = np.random.default_rng(0)
    wmse = list(rng.uniform(0.01, 0.1, n))
    const = list(rng.uniform(0.0, 0.01, n))
    wmse[0] = const[0] = float("nan")
    term = [0.3] + [w + c for w, c in zip(wmse[1:], const[1:])]
    return {
        "t": t,
        "mse_per_dim": list(rng.uniform(0.1, 1.0, n)),
        "wmse": wmse,
        "const": const,
        "term": term,
        "term_se": [0.001] * n,
        "variance": "learned",
        "decoder": 0.3,
        "prior": 1e-6,
        "total": 1e-6 + sum(term),
        "l_simple": 0.5,
        "label": "test",
        "units": {"term": "bits/dim"},
    }


def _lines(fig):
    return [line for ax in fig.axes for line in ax.get_lines() if len(line.get_xdata()) > 1]


def test_per_step_mse_is_plotted_against_the_real_t(table):
    fig = F.fig_per_step_mse(table)
    lines = _lines(fig)
    assert lines
    t = np.asarray(table["t"], dtype=float)
    for line in lines:
        x = np.asarray(line.get_xdata(), dtype=float)
        assert np.array_equal(x, t) or np.array_equal(x, t[1:])
    mse_line = lines[0]
    assert np.allclose(mse_line.get_ydata(), table["mse_per_dim"])
    ys = [np.asarray(line.get_ydata(), dtype=float) for line in lines[1:]]
    assert all(len(y) == len(t) - 1 for y in ys)
    assert any(np.allclose(y, table["wmse"][1:]) for y in ys)  # the weighted MSE exactly as the table has it
    assert any(np.allclose(y, table["term"][1:]) for y in ys)


def test_bound_terms_is_plotted_against_the_real_t(table):
    fig = F.fig_bound_terms(table)
    (line,) = _lines(fig)
    assert np.array_equal(line.get_xdata(), table["t"][1:])
    assert np.allclose(line.get_ydata(), table["term"][1:])
    assert f"{table['total']:.3f} bits/dim" in fig.axes[0].get_title()


def test_reduction_cumulative_sums_end_at_the_bound_and_l_simple(table):
    fig = F.fig_reduction({"rows": {"model": table}})
    cum = fig.axes[1].get_lines()
    ends = sorted(float(line.get_ydata()[-1]) for line in cum if len(line.get_xdata()) > 1)
    want_bound = table["decoder"] + sum(table["term"][1:])  # L_0 + Σ_{t≥2}; + L_T is the star
    assert ends[-1] == pytest.approx(want_bound)
    # the cumulative simple curve is (1/T) Σ_s MSE_s over the table's steps: it ends at their mean
    assert ends[0] == pytest.approx(np.mean(table["mse_per_dim"]))
    assert "L_simple = mean_t MSE_t/D = 0.5000" in F.reduction_annotation(table)


def test_save_writes_the_table_beside_the_picture(table, tmp_path):
    F.save(F.fig_bound_terms(table), tmp_path, "bound_terms", table)
    for ext in ("png", "svg"):
        assert (tmp_path / f"bound_terms.{ext}").stat().st_size > 1000
    back = json.loads((tmp_path / "bound_terms.json").read_text())
    assert back["figure"] == "bound_terms" and back["units"] == {"term": "bits/dim"}
    assert back["t"] == table["t"] and back["wmse"][0] is None  # NaN → null (valid JSON)

"""The docs' figures are drawn from the data tables beside them (docs/figures/NAME.json), and the captions the
docs state as facts are checked against those tables."""

import json
import re
from pathlib import Path

import numpy as np

from elbo_lab.figures import FIGURES
from elbo_lab.reduction import mass_summary

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_every_docs_figure_has_its_table():
    for name in FIGURES:
        assert (DOCS / "figures" / f"{name}.png").stat().st_size > 1000, name
        tab = json.loads((DOCS / "figures" / f"{name}.json").read_text())
        assert tab["figure"] == name and tab["source"]["mode"] == "quick", name


def test_elbo_page_caption_matches_the_bound_terms_table():
    page = (DOCS / "guide" / "05-elbo.md").read_text()
    caption = re.search(r"\{\{ figure bound_terms (.*?) \}\}", page).group(1)
    tab = json.loads((DOCS / "figures" / "bound_terms.json").read_text())
    m = mass_summary(tab, ranges=((2, 10), (11, 100), (101, 1000)))
    early, mid, late = m["ranges"]
    assert "steps 2–10 hold under 5 % of the bound" in caption and early["share"] < 0.05
    assert "steps 11–100 more than half" in caption and mid["share"] > 0.5
    assert "the last 900 steps most of the rest" in caption and late["share"] > 0.5 * (
        1 - early["share"] - mid["share"]
    )
    peak = int(np.argmax(tab["term"][1:])) + 2
    assert "peak in the tens of steps" in caption and 10 <= peak < 100
    assert "most of it sits in the first few steps" not in page

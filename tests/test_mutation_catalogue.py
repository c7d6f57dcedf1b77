"""The seeded-bug catalogue of benchmarks/mutation.py still applies to the current source (cheap: no mutant runs).

If code moves and a patch's original text no longer occurs exactly once, the catalogue would silently test
nothing; this test fails instead, naming the mutant, so the catalogue is updated with the code.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("elbo_mutation", ROOT / "benchmarks" / "mutation.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses need the module registered
    spec.loader.exec_module(mod)
    return mod


def test_every_patch_applies_exactly_once_and_maps_to_existing_tests():
    mut = _load()
    assert mut.check_catalogue() == []
    assert len(mut.CATALOGUE) >= 36


def test_catalogue_covers_every_formula_family_and_the_issue_survivors():
    mut = _load()
    families = {m.family for m in mut.CATALOGUE}
    for family in (
        "decoder",
        "schedule",
        "bits/dim",
        "L_T",
        "learned variance",
        "categorical head",
        "sampling step",
        "standard error",
        "losses",
        "KL",
        "posterior",
    ):
        assert family in families, family
    ids = {m.id for m in mut.CATALOGUE}
    survivors = {
        "sampler.always_posterior",
        "stderr.decoder_stratum",
        "loss.hybrid_no_detach",
        "loss.hybrid_no_T",
        "loss.vlb_no_weight",
    }
    assert survivors <= ids


def test_check_reports_a_patch_that_no_longer_applies(tmp_path):
    mut = _load()
    m = mut.CATALOGUE[0]
    (tmp_path / m.file).parent.mkdir(parents=True)
    (tmp_path / m.file).write_text("code that moved\n")
    problems = mut.check_catalogue(tmp_path)
    assert any(p.startswith(f"{m.id}: the original text occurs 0 times") for p in problems)

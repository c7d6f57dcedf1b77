"""The derivation machinery itself: checks that can fail, rendering, registry, exported results."""

import json

import pytest
import sympy as sp

from elbo_lab.cli import main
from elbo_lab.symbolic import build, get, names
from elbo_lab.symbolic.algebra import (
    Square,
    complete_square,
    completes_square,
    expect_normal,
    expect_normal_direct,
    log_identity,
    log_integral_exp_quadratic,
    log_normal,
    normal_pdf,
)
from elbo_lab.symbolic.core import Derivation, coefficients_equal, equal, holds, integral_equals, is_zero

a, b = sp.symbols("a b", positive=True)
x = sp.Symbol("x", real=True)


def test_checks_pass_and_fail():
    assert equal((a + b) ** 2, a**2 + 2 * a * b + b**2).run()[0]
    assert not equal((a + b) ** 2, a**2 + b**2).run()[0]
    assert coefficients_equal((x + a) ** 2, x**2 + 2 * a * x + a**2, [x]).run()[0]
    assert not coefficients_equal((x + a) ** 2, x**2 + a * x + a**2, [x]).run()[0]
    gauss = sp.exp(-(x**2) / 2) / sp.sqrt(2 * sp.pi)
    assert integral_equals(gauss, x, 1).run()[0]
    assert not integral_equals(gauss, x, sp.Rational(1, 2)).run()[0]
    assert is_zero(sp.log(a * b) - sp.log(a) - sp.log(b), method="expand_log").run()[0]
    assert not holds(lambda: 1 / 0, "raises").run()[0]  # an exception is a failed proof, not a crash


def test_polynomial_identity_by_taylor_coefficients():
    r = sp.sqrt(1 - a)  # a radical of a sum: r/(1 - a) = 1/r needs r² = 1 - a
    assert coefficients_equal(x * r / (1 - a) + b, x / r + b, [x], degree=1).run()[0]
    assert not coefficients_equal(x * r / (1 - a) + b, x / r, [x], degree=1).run()[0]  # constant term differs
    assert not coefficients_equal(x * r / (1 - a) + x**2, x / r, [x], degree=1).run()[0]  # beyond the degree


def test_log_identity_passes_and_fails():
    z, m = sp.symbols("z m", real=True)
    v = sp.Symbol("v", positive=True)
    # log of the pdf: log(exp(.)) and the square root of the normaliser are split off
    assert log_identity(sp.log(normal_pdf(z, m, v)), log_normal(z, m, v), [z]).run()[0]
    assert not log_identity(sp.log(normal_pdf(z, m, v)), log_normal(z, m, 2 * v), [z]).run()[0]
    # only a log-normaliser differs (the polynomial parts agree)
    ok, detail = log_identity(log_normal(z, m, v) + sp.log(2) / 2, log_normal(z, m, v), [z]).run()
    assert not ok and "log-normalisers differ" in detail
    # no generators: an identity between rational functions and logs
    assert log_identity(sp.log(a * b) - sp.log(a), sp.log(b)).run()[0]
    assert not log_identity(sp.log(a * b), sp.log(a) + 2 * sp.log(b)).run()[0]


def test_completed_square_and_gaussian_expectations():
    z, m = sp.symbols("z m", real=True)
    v = sp.Symbol("v", positive=True)
    quad = log_normal(z, m, v)
    sq = complete_square(quad, z)
    assert sp.simplify(sq.centre - m) == 0 and sp.simplify(sq.variance - v) == 0
    assert completes_square(quad, sq).run()[0]
    assert not completes_square(quad, Square(z, sq.a, sq.centre + 1, sq.const)).run()[0]
    assert log_identity(log_integral_exp_quadratic(sq), 0).run()[0]  # a normalised density integrates to 1
    for f in (z, z**2, (z - m) ** 2):
        exact = {z: m, z**2: m**2 + v, (z - m) ** 2: v}[f]
        assert sp.expand(expect_normal(f, z, m, v) - exact) == 0
        assert sp.expand(expect_normal_direct(f, z, m, v) - exact) == 0


def test_result_at_substitutes_in_argument_order():
    kl = get("gaussian_kl").result("kl")
    mu1, var1, mu2, var2 = kl.args
    assert sp.simplify(kl.at(mu1, var1, mu1, var1)) == 0  # KL(p ‖ p) = 0
    assert (
        sp.simplify(
            kl.at(mu2, var2, mu1, var1) - kl.expr.subs({mu1: mu2, var1: var2, mu2: mu1, var2: var1}, simultaneous=True)
        )
        == 0
    )
    with pytest.raises(ValueError, match="arguments"):
        kl.at(mu1, var1)


def test_export_rejects_free_symbols():
    d = Derivation("t", "E0", "t", "none")
    with pytest.raises(ValueError, match="free symbols"):
        d.export("r", a + b, (a,))


def test_registry_names_in_guide_order():
    assert names()[0] == "gaussian_kl" and len(names()) == 12


def test_gaussian_kl_checks_and_wrong_claim_fails():
    assert get("gaussian_kl").verify().ok
    kl = get("gaussian_kl").result("kl").expr
    mu1, var1, mu2, var2 = get("gaussian_kl").result("kl").args
    # a KL without its 1/2
    wrong = build("gaussian_kl", kl=2 * kl)
    report = wrong.verify()
    assert not report.ok
    assert "✗" in report.render_text()
    # the exported result is derived (integrated), not the claim: it still equals the textbook form
    textbook = (sp.log(var2 / var1) + (var1 + (mu1 - mu2) ** 2) / var2 - 1) / 2
    assert sp.simplify(sp.expand_log(kl - textbook, force=True)) == 0


def test_cli_derive_json(tmp_path, capsys):
    out = tmp_path / "d.json"
    assert main(["derive", "gaussian_kl", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    (d,) = data["derivations"]
    assert {"name", "title", "guide_section", "seconds", "steps"} <= set(d)
    assert all({"statement", "latex", "justification", "checked"} <= set(s) for s in d["steps"])
    assert all(s["checked"] for s in d["steps"])
    assert "✓" in capsys.readouterr().out


def test_cli_unknown_name_exits_2(capsys):
    assert main(["derive", "no_such_thing"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "valid names" in err and "gaussian_kl" in err

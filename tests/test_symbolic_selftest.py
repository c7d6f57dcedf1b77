"""The derivations' self-test (issue 11): every step's check must refuse its own perturbed after-expression, and
the seeded wrong claims must show ✗ at their step."""

import pytest
import sympy as sp

from elbo_lab.cli import main
from elbo_lab.symbolic import build, get, names
from elbo_lab.symbolic import eps_weight as e9
from elbo_lab.symbolic import sampling_step as e11
from elbo_lab.symbolic import vae_elbo as e3
from elbo_lab.symbolic.core import DELTA, Derivation, equal, holds, perturbations

a, b = sp.symbols("a b", positive=True)


@pytest.mark.parametrize("name", names())
def test_every_check_refuses_its_perturbed_step(name):
    d = get(name)
    results = d.self_test()
    survivors = [(i, r.step.statement, r.survived) for i, r in enumerate(results, 1) if not r.ok]
    assert survivors == []
    assert all(r.killed for r in results)
    assert d.unchecked_exports() == []


def test_self_test_reports_a_vacuous_check():
    d = Derivation("t", "E0", "t", "none")
    d.step("reads its after-expression", (a + b) ** 2, "expand", equal(a**2 + 2 * a * b + b**2, (a + b) ** 2))
    d.step("compares the after with itself", a + b, "vacuous", equal(a + b, a + b))
    d.step("never reads the after", a * b, "unrelated", holds(lambda: True, "always true"))
    results = d.self_test()
    assert results[0].ok and results[0].killed == ["after + δ", "after·(1 + δ)"]
    assert results[1].survived == ["after + δ", "after·(1 + δ)"]
    assert results[2].survived == ["check does not read the after-expression"]


def test_perturbations_of_a_relation_and_of_zero():
    assert [n for n, _ in perturbations(sp.Ge(a, b))] == ["relation reversed", "rhs + δ"]
    assert perturbations(sp.Ge(a, b))[0][1] == sp.Le(a, b)
    assert [n for n, _ in perturbations(sp.Integer(0))] == ["after + δ"]  # 0·(1 + δ) is no perturbation
    assert perturbations(a)[0][1] == a + DELTA


def _failed_steps(report):
    return [s.step.statement for s in report.steps if not s.checked]


def test_seeded_e1_diagonal_kl_with_p_and_q_swapped():
    e1 = get("gaussian_kl")
    (step,) = [s for s in e1.steps if s.statement.startswith("so the diagonal KL")]
    swapped = step.after.xreplace(
        {
            sp.Symbol(f"{p}_{i}", **kw): sp.Symbol(f"{q}_{i}", **kw)
            for i in (1, 2, 3)
            for p, q, kw in (
                ("m", "n", {"real": True}),
                ("n", "m", {"real": True}),
                ("u", "w", {"positive": True}),
                ("w", "u", {"positive": True}),
            )
        }
    )
    assert swapped != step.after
    failed = _failed_steps(build("gaussian_kl", kl_diag=swapped).verify())
    assert failed == [step.statement]


def test_seeded_e1_kl_nonpositive():
    failed = _failed_steps(build("gaussian_kl", gibbs_relation=sp.Le).verify())
    assert len(failed) == 1 and failed[0].startswith("Gibbs' inequality")


def test_seeded_e3_elbo_above_log_p():
    report = build("vae_elbo", bound_relation=sp.Ge).verify()
    failed = _failed_steps(report)
    assert len(failed) == 1 and failed[0].startswith("Hence ELBO ≤ log p(x)")
    assert "✗" in report.render_text()


def test_seeded_e3_step3_reads_the_claim():
    """E3 step 3 (take E_q of both sides) used to check ∫ q·c dz = c whatever the claim; now it re-derives it."""
    failed = _failed_steps(build("vae_elbo", log_marginal=e3.ELBO - e3.GAP).verify())
    assert any(f.startswith("Take E_q of both sides") for f in failed)
    failed = _failed_steps(build("vae_elbo", elbo=e3.RECON + e3.KL_PRIOR).verify())
    assert any(f.startswith("Take E_q of both sides") for f in failed)


def test_inequalities_print_as_relations():
    e1 = get("gaussian_kl")
    lemma = next(s for s in e1.steps if s.statement.startswith("Lemma L1"))
    assert lemma.text() == "log(r) ≤ r - 1"
    assert r"\leq" in lemma.latex()
    iwae = next(s for s in get("vae_elbo").steps if s.statement.startswith("Hence ELBO ≤ IWAE_k"))
    assert "≤" in iwae.text()


def test_cli_self_test_exit_codes(capsys, monkeypatch):
    assert main(["derive", "--self-test", "gaussian_kl", "posterior"]) == 0
    out = capsys.readouterr().out
    assert "steps tested, 0 survived" in out
    # a derivation with a vacuous step (its check never reads the step) makes the self-test exit 1
    import elbo_lab.symbolic as symbolic

    vacuous = Derivation("gaussian_kl", "E1", "t", "none")
    vacuous.step("never reads the after", a * b, "unrelated", holds(lambda: True, "always true"))
    monkeypatch.setattr(symbolic, "get", lambda name: vacuous)
    assert main(["derive", "--self-test", "gaussian_kl"]) == 1
    out = capsys.readouterr().out
    assert "survived check does not read the after-expression" in out and "1 survived" in out


def _rerun(step, wrong):
    """Re-run ``step``'s check with ``wrong`` in place of its after-expression (what a wrong export would meet)."""
    slots = step.check.slots(step.after)
    args = list(step.check.args)
    for i in slots:
        args[i] = wrong
    return step.check.run(tuple(args))[0]


def test_seeded_e9_weight_snr_swapped():
    d = get("eps_weight")
    r = d.result("weight_snr")
    step = d.steps[r.step - 1]
    assert step.statement.startswith("In SNR form") and step.check.run()[0]
    swapped = r.expr.xreplace({e9.snr_s: e9.snr_prev_s, e9.snr_prev_s: e9.snr_s})
    assert swapped != r.expr
    assert not _rerun(step, swapped)
    # and as a claim: ✗ at that step
    failed = _failed_steps(
        build(
            "eps_weight", weight_snr=e9.TEXTBOOK_WEIGHT_SNR.xreplace({e9.snr_s: e9.snr_prev_s, e9.snr_prev_s: e9.snr_s})
        ).verify()
    )
    assert failed == [step.statement]


def test_seeded_e11_sigma_squared_times_z():
    d = get("sampling_step")
    r = d.result("step")
    step = d.steps[r.step - 1]
    assert step.check.run()[0]
    wrong_step = r.expr.xreplace({sp.sqrt(e11.sigma2): e11.sigma2})
    assert wrong_step != r.expr
    assert not _rerun(step, sp.Tuple(step.after[0], wrong_step))


def test_special_cases_carry_a_printed_scope():
    text = get("gaussian_kl").verify().render_text()
    assert "[special case: D = 3]" in text
    assert "assumes: var1 > 0" in text


def test_readable_text_and_latex():
    x0_step = get("eps_weight").steps[0]
    assert x0_step.text() == "x_0 = (-ε*√(1 - ᾱ_t) + x_t)/√ᾱ_t"  # not sqrt(-alpha_bar_prev*(1 - beta) + 1)
    assert r"\sqrt{1 - \bar\alpha_t}" in x0_step.latex()
    # E2 step 1 used to read `z = εσ + μ = ε = (z−μ)/σ`; now the sample alone, with its inverse in the statement
    e2_first = get("reparameterization").steps[0]
    assert e2_first.text() == "z = ε*σ + μ" and "(z − mu)/sigma" in e2_first.statement
    # two equations are shown as equivalent, never as equal
    stationary = next(s for s in get("linear_gaussian").steps if "∇_(m, v) gap = 0" in s.statement)
    assert " ⇔ " in stationary.text() and r"\iff" in stationary.latex()
    # a symbol written in LaTeX is kept as written
    assert get("eps_weight").steps[2].latex().startswith(r"\tilde\mu_t - \mu_\theta = ")


def test_log_identity_requires_positive_log_arguments():
    from elbo_lab.symbolic.algebra import log_identity

    beta = sp.Symbol("beta", positive=True)  # a schedule quantity: declared in (0, 1)
    assert log_identity(sp.log(1 - beta) + sp.log(2), sp.log(2 - 2 * beta)).run()[0]
    ok, detail = log_identity(sp.log(a - 1) + sp.log(2), sp.log(2 * a - 2)).run()  # a > 0 only: a − 1 may be ≤ 0
    assert not ok and "not provably > 0" in detail
    ok, _ = log_identity(sp.log(beta - 1), sp.log(beta - 1)).run()  # β − 1 < 0 on (0, 1)
    assert not ok

"""`elbo-lab run` end to end on the seconds-long "smoke" budget: every stage, report, figures, resume, bad input."""

import json
import math

import pytest
import torch

from elbo_lab.cli import main
from elbo_lab.run import build_report, run_pipeline

FIGURES = [
    "forward_noising",
    "reverse_process",
    "training_curve",
    "bound_vs_loss",
    "bound_terms",
    "eps_weights",
    "per_step_mse",
    "reduction",
    "oracle_gap",
    "mc_convergence",
    "vae_iwae",
    "samples",
]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    rc = run_pipeline(out, mode="smoke", seed=0, log=lambda s: None)
    return out, rc


def test_every_output_is_written(smoke):
    out, rc = smoke
    assert rc == 0
    for name in FIGURES:
        for ext in ("png", "svg"):
            assert (out / f"{name}.{ext}").stat().st_size > 1000, name
        table = json.loads((out / f"{name}.json").read_text())  # every figure has its data table, with units
        assert table["figure"] == name and table.get("units") or table.get("rows"), name
    html = (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    for section in ("Summary", "Checks", "Figures", "Derivations"):
        assert f"<h2>{section}</h2>" in html and f"## {section}" in md
    assert "All 12 derivations" in md and "FAILED" not in md
    res = json.loads((out / "results.json").read_text())
    assert res["all_checks_pass"] is True
    for key in ("git_commit", "versions", "device", "seed", "checks", "vae", "ddpm", "oracle_gap", "figures"):
        assert key in res, key
    assert res["versions"]["torch"].startswith(torch.__version__.split("+")[0])
    # every check carries its numbers; model numbers are bits/dim with a standard error
    assert all({"expected", "observed", "tolerance", "passed"} <= set(c) for c in res["checks"])
    assert res["ddpm"]["headline"]["stderr"] > 0
    assert res["vae"]["bounds"]["test"]["iwae"]["bits_per_dim_stderr"] > 0


def test_rerun_continues_instead_of_starting_over(smoke):
    out, _ = smoke
    kept = [out / "stages" / "vae.json", out / "stages" / "ddpm_eval.json", out / "ddpm" / "best.pt"]
    before = [p.stat().st_mtime_ns for p in kept]
    lines = []
    assert run_pipeline(out, mode="smoke", seed=0, log=lines.append) == 0
    assert [p.stat().st_mtime_ns for p in kept] == before  # nothing recomputed (the figures are redrawn)
    assert any("done earlier" in line for line in lines)


def test_foreign_or_mismatched_output_dir_exits_2(smoke, tmp_path, capsys):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    assert main(["run", "--out", str(foreign)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not empty" in err
    assert (foreign / "thesis.tex").read_text() == "precious"
    out, _ = smoke  # a smoke run's directory is not a quick run's
    assert main(["run", "--out", str(out)]) == 2
    assert "choose another" in capsys.readouterr().err


def test_unwritable_output_exits_2(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["run", "--out", str(f / "sub")]) == 2
    assert capsys.readouterr().err.startswith("elbo-lab: error:")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_gpu_exits_2(tmp_path, capsys):
    assert main(["run", "--device", "cuda", "--out", str(tmp_path / "r")]) == 2
    assert "cuda" in capsys.readouterr().err.lower()


def test_failing_check_is_at_the_top_of_the_report(smoke):
    out, _ = smoke
    stages = {p.stem: json.loads(p.read_text()) for p in (out / "stages").glob("*.json")}
    claims = [dict(c) for c in stages["checks"]["claims"]]
    claims[3]["passed"] = False

    class P:  # the parts of a Pipeline that build_report reads
        mode, seed, timings = "smoke", 0, {}

    rep = build_report(P(), stages, {}, claims)
    md = rep.to_markdown()
    first_section = md.split("## ")[1]
    assert "FAILED" in first_section and claims[3]["id"] in first_section
    assert '<p class="alert">' in rep.to_html()


def _table(out, name):
    return json.loads((out / f"{name}.json").read_text())


def test_per_step_figures_are_the_bound_the_report_prints(smoke):
    """Figures 2 and 4 (and the reduction figure) come from one table: its steps are the real t = 1..T, its terms
    split into w_t·MSE with the model's own σ_t² plus the variance constant, and L_T + Σ_t terms is the full bound
    that results.json and the report print for the same model and images."""
    out, _ = smoke
    res = json.loads((out / "results.json").read_text())
    cfg = res["ddpm"]["config"]
    for name in ("per_step_mse", "bound_terms"):
        tab = _table(out, name)
        assert tab["t"] == list(range(1, cfg["T"] + 1))
        assert tab["variance"] == cfg["variance"] == "learned"
        term = torch.tensor(tab["term"], dtype=torch.float64)
        parts = torch.tensor(tab["wmse"][1:], dtype=torch.float64) + torch.tensor(tab["const"][1:], dtype=torch.float64)
        assert torch.allclose(parts, term[1:], rtol=1e-9, atol=0)
        total = tab["prior"] + float(term.sum())
        assert abs(total - res["ddpm"]["full"]["bits_per_dim"]) < 1e-12
        assert tab["decoder"] == tab["term"][0] == res["ddpm"]["full"]["decoder"]
    md = (out / "report.md").read_text()
    assert f"| {res['ddpm']['full']['bits_per_dim']:.3f} |" in md
    red = _table(out, "reduction")["rows"]
    ddpm = next(v for k, v in red.items() if k.startswith("trained DDPM"))
    assert ddpm["total"] == res["ddpm"]["full"]["bits_per_dim"]
    assert f"= {ddpm['total']:.4f} bits/dim" in md and f"L_simple = mean_t MSE_t/D = {ddpm['l_simple']:.4f}" in md


def test_per_step_figure_agrees_with_elbo_lab_bound(smoke, tmp_path, capsys):
    """`elbo-lab bound --estimator full` on the same checkpoint and images (its own random numbers) gives the same
    bound as the figure's table, step group by step group and in total (within 4 standard errors).  The totals are
    compared image by image: on the same images the spread between images cancels and the paired differences
    carry only ε noise (the table draws one ε per step, the bound two: Var(d_i) = 3·stderr_i² of the bound), so
    the standard error is the ε noise's, not the images' (in the quick run 10× smaller; on this smoke model
    about the same)."""
    out, _ = smoke
    tab = _table(out, "per_step_mse")
    n = tab["images"]
    f = tmp_path / "bound.json"
    assert (
        main(
            [
                "bound",
                str(out / "ddpm" / "best.pt"),
                "--estimator",
                "full",
                "--n",
                str(n),
                "--seed",
                "11",
                "--json",
                str(f),
            ]
        )
        == 0
    )
    capsys.readouterr()
    ref = json.loads(f.read_text())
    d = torch.tensor(ref["per_image"]["total"], dtype=torch.float64) - torch.tensor(
        tab["per_image_total"], dtype=torch.float64
    )
    assert abs(d.mean().item() - (ref["total"] - tab["total"])) < 1e-12
    se_d = (3 * torch.tensor(ref["per_image"]["stderr"], dtype=torch.float64).pow(2)).sum().sqrt().item() / n
    assert abs(d.mean().item()) < 4 * se_d, (d.mean().item(), se_d)
    assert abs(ref["prior_L_T"] - tab["prior"]) < 1e-12  # no noise in L_T
    for g in ref["groups"]:
        a, b = g["t_from"] - 1, g["t_to"]
        mine = sum(tab["term"][a:b])
        se = math.sqrt(sum(x * x for x in tab["term_se"][a:b]))
        assert abs(mine - g["bits_per_dim"]) < 4 * math.hypot(se, g["stderr"]), g


def test_training_curve_has_its_points_and_names_its_estimator(smoke):
    from elbo_lab.run import BUDGETS

    out, _ = smoke
    tab = _table(out, "training_curve")
    b = BUDGETS["smoke"]
    assert tab["step"] == list(range(0, b.ddpm_steps + 1, b.ddpm_eval_every))
    assert len(tab["bound"]) == len(tab["simple"]) == len(tab["step"])
    assert all(s > 0 for s in tab["bound_se"]) and all(s > 0 for s in tab["simple_se"])
    # the curve's ± 2 s.e. band is drawn from an estimator whose 95% interval was measured to cover
    from elbo_lab.cite import interval_covers

    assert tab["estimator"].startswith("importance") and interval_covers(tab["estimator"].split(",")[0])
    q = BUDGETS["quick"]
    assert q.ddpm_steps // q.ddpm_eval_every + 1 >= 20  # the default run's curve has at least 20 points


def test_captions_state_what_the_data_say(smoke):
    from elbo_lab.figures import gap_facts, gap_phrase
    from elbo_lab.reduction import mass_summary

    out, _ = smoke
    md = (out / "report.md").read_text()
    m = mass_summary(_table(out, "bound_terms"))
    r = m["ranges"][0]
    assert f"Steps 2–10 hold {r['bits_per_dim']:.3f} of the {m['total']:.3f} bits/dim" in md
    og = _table(out, "oracle_gap")
    for name, g in og["gaps"].items():
        assert gap_phrase(name, gap_facts(og["Ts"], g)) in md
    assert "gap closes as T grows" not in md


def test_same_seed_same_numbers(smoke, tmp_path):
    """Two smoke runs with the same seed: identical results.json numbers, timings aside (the budgets are steps)."""
    import subprocess
    import sys
    from pathlib import Path

    out, _ = smoke
    other = tmp_path / "again"
    assert run_pipeline(other, mode="smoke", seed=0, log=lambda s: None) == 0
    script = Path(__file__).resolve().parents[1] / "experiments" / "reproducibility.py"
    p = subprocess.run([sys.executable, str(script), "--compare", str(out), str(other)], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "identical" in p.stdout


def test_claim_numbers_carry_units(smoke):
    """Every estimate-vs-exact row of the claim table says its unit; the DDPM route checks say on what they run."""
    out, _ = smoke
    claims = json.loads((out / "results.json").read_text())["checks"]
    units = ("nats", "bits/dim", "units of x")
    for c in claims:
        if "stderr" in c["tolerance"]:
            assert any(u in c["expected"] for u in units) and any(u in c["observed"] for u in units), c["id"]
    routes = [c for c in claims if c["id"].startswith("DDPM.routes.")]
    assert routes and all("untrained" in c["statement"] for c in routes)

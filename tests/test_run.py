"""`elbo-lab run` end to end on the seconds-long "smoke" budget: every stage, report, figures, resume, bad input."""

import json
import time

import pytest
import torch

from elbo_lab.cli import main
from elbo_lab.run import build_report, run_pipeline

FIGURES = [
    "bound_vs_loss",
    "bound_terms",
    "eps_weights",
    "per_step_mse",
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
    before = (out / "stages" / "vae.json").stat().st_mtime_ns
    t0 = time.perf_counter()
    lines = []
    assert run_pipeline(out, mode="smoke", seed=0, log=lines.append) == 0
    assert time.perf_counter() - t0 < 60
    assert (out / "stages" / "vae.json").stat().st_mtime_ns == before
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

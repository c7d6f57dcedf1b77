"""Seeded-bug (mutation) testing: does the test suite, and does ``elbo-lab verify``, catch every formula bug?

A catalogue of one-line source patches, each a plausible formula bug (a dropped ln 2, a wrong index, a missing
square root, a swapped KL direction, a forgotten ``detach`` ...).  Each mutant is applied alone to a fresh copy
of the project in a temporary directory (the working tree is never touched), then

  (i)  the test files mapped to it run (``pytest -x``; ``--full-tests`` runs the whole default suite), and
  (ii) ``elbo-lab verify`` runs: every claim except the SymPy step proofs ``E*.derivation`` (which read only
       elbo_lab/symbolic and so cannot see a numeric patch; they do run for a patch inside elbo_lab/symbolic, and
       ``--full-verify`` always runs them).

A mutant is *caught* when the tests fail (exit status 1: a failing test; any other non-zero status, e.g. an
import error, is reported separately and also counts) and, separately, when at least one claim fails.  The
mutation score of each is caught/total; the target is 100 % for both.

    python benchmarks/mutation.py                     # whole catalogue, mapped tests + verify (~10–20 CPU-min)
    python benchmarks/mutation.py --only sampler      # mutants whose id contains "sampler"
    python benchmarks/mutation.py --tests-only        # or --verify-only
    python benchmarks/mutation.py --json out.json     # per-mutant results
    python benchmarks/mutation.py --list              # the catalogue
    python benchmarks/mutation.py --check             # every patch applies to the current source (also a test)

Budgets are counts (one pytest run and one verify run per mutant); the script prints the CPU seconds of its
child processes (``resource.getrusage``), not only wall time.  ``tests/test_mutation_catalogue.py`` checks that
every patch still applies (exactly one match) so the catalogue cannot rot silently when code moves.
"""

# ruff: noqa: E501  (the catalogue is a table: one mutant per entry, its patch text verbatim)

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT  # what mutants are copied from: a snapshot of ROOT taken when the run starts


@dataclass(frozen=True)
class Mutant:
    id: str
    family: str
    file: str  # relative to the repository root
    old: str  # must occur exactly once in the file
    new: str
    tests: tuple[str, ...]  # test files (or node ids) that should catch it
    why: str = ""


B, D_, G, S, O, TL, SAMP, SE, DD = (
    "tests/test_bound.py",
    "tests/test_diffusion.py",
    "tests/test_ddpm.py",
    "tests/test_schedule.py",
    "tests/test_oracles.py",
    "tests/test_training_losses.py",
    "tests/test_sampling.py",
    "tests/test_standard_errors.py",
    "tests/test_vae.py",
)

G_CAT = (
    G + "::test_categorical_head_is_the_bayes_denoiser_at_zero_logits",
    G + "::test_categorical_head_snaps_to_the_grid_at_low_noise",
)

CATALOGUE: list[Mutant] = [
    # --- discretized decoder (elbo_lab/gaussian.py) ------------------------------------------------------------
    Mutant("decoder.bin_width", "decoder", "elbo_lab/gaussian.py",
           "h = 1.0 / (levels - 1)", "h = 2.0 / (levels - 1)", (B,), "bins twice as wide"),
    Mutant("decoder.bottom_bin", "decoder", "elbo_lab/gaussian.py",
           "bottom = x < -1.0 + edge", "bottom = x < -1.0 - edge", (B,), "lowest bin not extended to −∞"),
    Mutant("decoder.top_bin", "decoder", "elbo_lab/gaussian.py",
           "top = x > 1.0 - edge", "top = x > 1.0 + edge", (B,), "highest bin not extended to +∞"),
    Mutant("decoder.tail_branch", "decoder", "elbo_lab/gaussian.py",
           "upper_side = (lo + hi) > 0", "upper_side = (lo + hi) > 1e300", (B,), "no upper-tail branch: Φ(hi) − Φ(lo) cancels"),
    Mutant("gaussian.log_prob_var", "gaussian", "elbo_lab/gaussian.py",
           "-0.5 * (_LOG_2PI + torch.log(var) + (x - mean) ** 2 / var)", "-0.5 * (_LOG_2PI + (x - mean) ** 2 / var)",
           (B, O), "log-density without log σ²"),
    Mutant("kl.log_ratio", "KL", "elbo_lab/gaussian.py",
           "torch.log(var2) - torch.log(var1)", "torch.log(var1) - torch.log(var2)", (B, D_), "KL log-ratio flipped"),
    Mutant("kl.minus_one", "KL", "elbo_lab/gaussian.py",
           "(var1 + (mean1 - mean2) ** 2) / var2 - 1.0)", "(var1 + (mean1 - mean2) ** 2) / var2)", (B, D_), "KL without −1"),
    # --- schedules (elbo_lab/schedule.py) ---------------------------------------------------------------------
    Mutant("schedule.cosine_offset", "schedule", "elbo_lab/schedule.py",
           "math.cos((u + s) / (1 + s) * math.pi / 2) ** 2", "math.cos(u / (1 + s) * math.pi / 2) ** 2", (S,), "cosine offset s dropped"),
    Mutant("schedule.cosine_clip", "schedule", "elbo_lab/schedule.py",
           "min(1 - alpha_bar((i + 1) / T) / alpha_bar(i / T), max_beta)", "1 - alpha_bar((i + 1) / T) / alpha_bar(i / T)",
           (S,), "cosine β not clipped at max_beta"),
    Mutant("schedule.linear_scale", "schedule", "elbo_lab/schedule.py",
           "scale = 1000 / T", "scale = 100 / T", (S,), "linear 1000/T scaling wrong"),
    Mutant("schedule.one_minus_alpha_bar", "schedule", "elbo_lab/schedule.py",
           "-torch.expm1(torch.cumsum(torch.log1p(-self.betas), dim=0))", "-torch.expm1(torch.cumsum(torch.log1p(self.betas), dim=0))",
           (S,), "1 − ᾱ from log(1 + β)"),
    Mutant("schedule.alpha_bar_prev", "schedule", "elbo_lab/schedule.py",
           "torch.cat([self.betas.new_ones(1), self.alpha_bars[:-1]])", "torch.cat([self.betas.new_ones(1), self.alpha_bars[1:]])",
           (S,), "ᾱ_{t−1} shifted the wrong way"),
    Mutant("schedule.posterior_variance", "posterior", "elbo_lab/schedule.py",
           "return self.betas * self.one_minus_alpha_bars_prev / self.one_minus_alpha_bars",
           "return self.one_minus_alpha_bars_prev / self.one_minus_alpha_bars", (S, D_), "β̃ without β"),
    Mutant("schedule.clip_index", "learned variance", "elbo_lab/schedule.py",
           "first = v[1:2] if self.T > 1", "first = v[2:3] if self.T > 1", (S, D_), "β̃_1 clipped to β̃_3"),
    Mutant("schedule.snr", "schedule", "elbo_lab/schedule.py",
           "return self.alpha_bars / self.one_minus_alpha_bars", "return self.one_minus_alpha_bars / self.alpha_bars",
           (S,), "SNR inverted"),
    # --- forward process, posterior, reverse mean (elbo_lab/diffusion.py) ------------------------------------
    Mutant("forward.q_sample_std", "forward", "elbo_lab/diffusion.py",
           "_at(schedule.one_minus_alpha_bars.sqrt(), k, x0) * noise", "_at(schedule.one_minus_alpha_bars, k, x0) * noise",
           (D_,), "noise scaled by variance, not std"),
    Mutant("forward.predict_eps", "forward", "elbo_lab/diffusion.py",
           "* x0) / _at(schedule.one_minus_alpha_bars.sqrt(), k, xt)", "* x0) / _at(schedule.one_minus_alpha_bars, k, xt)",
           (G + "::test_predict_eps_vs_sympy_and_inverts_q_sample",), "ε from x̂_0 divided by 1 − ᾱ"),
    Mutant("posterior.coef_x0", "posterior", "elbo_lab/diffusion.py",
           "coef_x0 = s.alpha_bars_prev.sqrt() * s.betas", "coef_x0 = s.alpha_bars.sqrt() * s.betas", (D_,), "√ᾱ_t for √ᾱ_{t−1}"),
    Mutant("posterior.coef_xt", "posterior", "elbo_lab/diffusion.py",
           "coef_xt = s.alphas.sqrt() * s.one_minus_alpha_bars_prev", "coef_xt = s.alphas * s.one_minus_alpha_bars_prev",
           (D_,), "α_t for √α_t"),
    Mutant("reverse.mean_sqrt", "posterior", "elbo_lab/diffusion.py",
           "_at(s.betas / s.one_minus_alpha_bars.sqrt(), k, xt) * eps_hat", "_at(s.betas / s.one_minus_alpha_bars, k, xt) * eps_hat",
           (D_,), "μ_θ with β/(1 − ᾱ)"),
    Mutant("variance.posterior_unclipped", "reverse variance", "elbo_lab/diffusion.py",
           "values = schedule.log_posterior_variance_clipped.exp()", "values = schedule.posterior_variance",
           (D_, B), "σ_1² = β̃_1 = 0 (no clip)"),
    Mutant("variance.learned_swapped", "learned variance", "elbo_lab/diffusion.py",
           "torch.exp(v * log_beta + (1.0 - v) *", "torch.exp((1.0 - v) * log_beta + v *", (D_, B), "v and 1 − v swapped"),
    Mutant("variance.learned_unclipped", "learned variance", "elbo_lab/diffusion.py",
           "(1.0 - v) * _at(schedule.log_posterior_variance_clipped, k, v)", "(1.0 - v) * _at(schedule.posterior_variance.log(), k, v)",
           (D_, B), "learned interpolation with unclipped log β̃"),
    Mutant("eps_weight.two", "ε weight", "elbo_lab/diffusion.py",
           "return b**2 / (2.0 * sigma2 * a * om)", "return b**2 / (sigma2 * a * om)",
           (D_,), "w_t without the ½"),
    Mutant("sampling.noise_at_t1", "sampling step", "elbo_lab/diffusion.py",
           "(torch.arange(schedule.T, device=schedule.device) > 0)", "(torch.arange(schedule.T, device=schedule.device) >= 0)",
           (D_, SAMP), "noise added at the last step t = 1"),
    Mutant("sampling.sigma_not_sqrt", "sampling step", "elbo_lab/diffusion.py",
           "return mean + nonzero * sigma2.sqrt() * noise", "return mean + nonzero * sigma2 * noise", (D_, SAMP), "σ² z instead of σ z"),
    # --- the sampler (elbo_lab/ddpm/sampling.py) -------------------------------------------------------------
    Mutant("sampler.always_posterior", "sampling step", "elbo_lab/ddpm/sampling.py",
           "x = D.p_sample_step(schedule, x, kk, eps, z, var)", 'x = D.p_sample_step(schedule, x, kk, eps, z, "posterior")',
           (SAMP,), "issue 14 survivor: σ² = β̃ whatever the model's variance"),
    # --- categorical head (elbo_lab/ddpm/model.py) -----------------------------------------------------------
    Mutant("categorical.no_likelihood", "categorical head", "elbo_lab/ddpm/model.py",
           "post = torch.softmax(logits + log_lik, dim=2)", "post = torch.softmax(logits, dim=2)", G_CAT, "posterior without q(x_t|l)"),
    Mutant("categorical.grid", "categorical head", "elbo_lab/ddpm/model.py",
           "grid = torch.linspace(-1.0, 1.0, K,", "grid = torch.linspace(0.0, 1.0, K,", G_CAT, "levels on [0, 1]"),
    Mutant("categorical.mean_not_sum", "categorical head", "elbo_lab/ddpm/model.py",
           "x0_hat = (post * grid).sum(2)", "x0_hat = (post * grid).mean(2)", G_CAT, "x̂_0 divided by K"),
    # --- the bound, L_T, bits/dim, standard errors (elbo_lab/bound.py) ---------------------------------------
    Mutant("prior.index", "L_T", "elbo_lab/bound.py",
           "D.q_marginal(schedule, x0, schedule.T - 1)", "D.q_marginal(schedule, x0, schedule.T - 2)", (B,), "L_T at t = T − 1"),
    Mutant("prior.direction", "L_T", "elbo_lab/bound.py",
           "normal_kl(mean, var, torch.zeros_like(mean), torch.ones_like(mean))",
           "normal_kl(torch.zeros_like(mean), torch.ones_like(mean), mean, var)", (B,), "KL(p ‖ q) for L_T"),
    Mutant("bound.kl_direction", "KL", "elbo_lab/bound.py",
           "out = normal_kl(mu_q, var_q, mu_p, sigma2)", "out = normal_kl(mu_p, sigma2, mu_q, var_q)", (B, O), "KL(p_θ ‖ q) per step"),
    Mutant("bits_per_dim.ln2", "bits/dim", "elbo_lab/bound.py",
           "c = 1.0 / (self.dim * math.log(2.0))", "c = 1.0 / self.dim", (B,), "bits/dim without ln 2"),
    Mutant("stderr.decoder_stratum", "standard error", "elbo_lab/bound.py",
           "v_dec = d.var(1) / R  #", "v_dec = d.var(1) / (2 * R)  #", (B, SE), "issue 14 survivor: L_0 stratum variance /2"),
    Mutant("proposal.linear_interp", "estimator", "elbo_lab/bound.py",
           "np.exp(np.interp(np.arange(s.T), steps.numpy(), log_rms))",
           "np.interp(np.arange(s.T), steps.numpy(), np.exp(log_rms))", (B,), "pilot √E[L²] interpolated linearly"),
    Mutant("pilot.no_last_pair", "estimator", "elbo_lab/bound.py",
           "np.union1d(np.concatenate([[0], inner]), [T - 2, T - 1])", "np.concatenate([[0], inner])", (B,),
           "pilot grid without T−2: an isolated last step smears"),
    Mutant("pilot.one_draw", "estimator", "elbo_lab/bound.py",
           "    draws: int = 4,\n) -> torch.Tensor:", "    draws: int = 1,\n) -> torch.Tensor:", (B,),
           "pilot with one ε draw per grid step"),
    Mutant("importance.no_take_all", "estimator", "elbo_lab/bound.py",
           "TAKE_ALL = 0.5", "TAKE_ALL = 1.5", (B,), "a step with p ≥ 1/2 stays sampled"),
    Mutant("importance.take_all_draws", "estimator", "elbo_lab/bound.py",
           "(k, max(decoder_draws, math.ceil(M * pk)))", "(k, decoder_draws)", (B,), "take-all step with 4 draws only"),
    Mutant("stderr.stratified", "standard error", "elbo_lab/bound.py",
           "v = (a - b).pow(2) / 4", "v = (a - b).pow(2) / 2", (B, SE), "stratum variance /2"),
    Mutant("stderr.uniform_sqrt_m", "standard error", "elbo_lab/bound.py",
           "var = y.var(1) / M", "var = y.var(1) / M**2", (B, SE), "stderr / M, not / √M"),
    Mutant("stderr.images", "standard error", "elbo_lab/bound.py",
           "return float(self.total.std() / math.sqrt(self.N))", "return float(self.total.std() / self.N)", (B, O), "SE over images / N"),
    Mutant("stderr.estimator", "standard error", "elbo_lab/bound.py",
           "return float(self.stderr.pow(2).sum().sqrt() / self.N)", "return float(self.stderr.sum() / self.N)",
           (B, SE), "SE of the estimator: Σ se instead of √Σ se²"),
    Mutant("importance.weight", "estimator", "elbo_lab/bound.py",
           "return k, 1.0 / p[k]", "return k, 1.0 / p[k].sqrt()", (B, O), "importance weight 1/√p"),
    Mutant("simple.mean_not_sum", "losses", "elbo_lab/bound.py",
           "return (noise - eps_hat).pow(2).flatten(1).mean(1)", "return (noise - eps_hat).pow(2).flatten(1).sum(1)",
           (G + "::test_simple_term_vs_sympy", TL), "L_simple not per dimension"),
    # --- training losses (elbo_lab/ddpm/train.py) ------------------------------------------------------------
    Mutant("loss.hybrid_no_detach", "losses", "elbo_lab/ddpm/train.py",
           'elif self.mode == "hybrid":\n            eps = eps.detach()', 'elif self.mode == "hybrid":\n            eps = eps',
           (TL,), "issue 14 survivor: ε̂ not detached inside L_vlb"),
    Mutant("loss.hybrid_no_T", "losses", "elbo_lab/ddpm/train.py",
           "cfg.hybrid_lambda * cfg.T * L_k", "cfg.hybrid_lambda * L_k", (TL,), "issue 14 survivor: hybrid without T"),
    Mutant("loss.vlb_no_weight", "losses", "elbo_lab/ddpm/train.py",
           "per = w * cfg.T * L_k * self.bpd", "per = cfg.T * L_k * self.bpd", (TL,), "issue 14 survivor: vlb without 1/(T p_k)"),
    Mutant("loss.simple_no_weight", "losses", "elbo_lab/ddpm/train.py",
           "per = w * simple", "per = simple", (TL,), "simple loss without 1/(T p_k)"),
    Mutant("loss.bpd_ln2", "bits/dim", "elbo_lab/ddpm/train.py",
           "self.bpd = 1.0 / (math.prod(ds.shape) * math.log(2.0))", "self.bpd = 1.0 / math.prod(ds.shape)",
           (TL,), "training bits/dim without ln 2"),
    # --- VAE (elbo_lab/vae/estimators.py) --------------------------------------------------------------------
    Mutant("vae.kl_prior_direction", "KL", "elbo_lab/vae/estimators.py",
           "return normal_kl(mean, var, torch.zeros_like(mean), torch.ones_like(var)).sum(-1)",
           "return normal_kl(torch.zeros_like(mean), torch.ones_like(var), mean, var).sum(-1)", (DD,), "VAE KL(p ‖ q)"),
    Mutant("vae.reparameterize_var", "reparameterization", "elbo_lab/vae/estimators.py",
           "return mean + torch.sqrt(var) * eps", "return mean + var * eps", (DD,), "z = μ + σ² ε"),
]  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------


def check_catalogue(root: Path = ROOT) -> list[str]:
    """Problems with the catalogue against the source under ``root`` (empty list: every patch applies once)."""
    problems, seen = [], set()
    for m in CATALOGUE:
        if m.id in seen:
            problems.append(f"{m.id}: duplicate id")
        seen.add(m.id)
        path = root / m.file
        if not path.exists():
            problems.append(f"{m.id}: {m.file} does not exist")
            continue
        n = path.read_text(encoding="utf-8").count(m.old)
        if n != 1:
            problems.append(f"{m.id}: the original text occurs {n} times in {m.file} (must be exactly once)")
        if m.old == m.new:
            problems.append(f"{m.id}: the patch changes nothing")
        for t in m.tests:
            file, _, node = t.partition("::")
            if not (root / file).exists() or (node and f"def {node}(" not in (root / file).read_text(encoding="utf-8")):
                problems.append(f"{m.id}: mapped test {t} does not exist")
    return problems


def _project_files(root: Path) -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=root, capture_output=True, text=True, check=True
    )
    return [f for f in out.stdout.splitlines() if (root / f).is_file()]


def _copy_project(root: Path, dest: Path, files: list[str]) -> None:
    for f in files:
        target = dest / f
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / f, target)


def _env(copy: Path) -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(copy), MPLBACKEND="Agg")
    env.pop("PYTEST_ADDOPTS", None)
    return env


CHILD = """
import sys
import elbo_lab
copy, tests, claims = sys.argv[1], sys.argv[2], sys.argv[3]
assert elbo_lab.__file__.startswith(copy), elbo_lab.__file__  # the mutated copy, not the installed tree
if tests != "-":
    import pytest
    rc = pytest.main(["-x", "-q", "-p", "no:cacheprovider", *tests.split(";")])
    print("TESTS_RC=%d" % int(rc), flush=True)
if claims != "-":
    from elbo_lab.checks.registry import load_all, run_claims
    ids = [c for c in load_all() if claims == "all" or not c.endswith(".derivation")]
    failed = [r.id for r in run_claims(seed=0, selected=ids) if not r.passed]
    print("FAILED_CLAIMS=" + ",".join(failed), flush=True)
"""


def _run(cmd, cwd, env, timeout) -> tuple[int, str, float]:
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
        return p.returncode, p.stdout + p.stderr, time.perf_counter() - t0
    except subprocess.TimeoutExpired:
        return -9, "timeout", time.perf_counter() - t0


def _old_tests(copy: Path, rev: str) -> None:
    """Replace the copy's tests/ by the tests/ of git revision ``rev`` (to show a mutant survived the old suite)."""
    shutil.rmtree(copy / "tests")
    names = subprocess.run(
        ["git", "ls-tree", "-r", "--name-only", rev, "tests"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in names:
        data = subprocess.run(["git", "show", f"{rev}:{name}"], cwd=ROOT, capture_output=True, check=True).stdout
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        (copy / name).write_bytes(data)


def run_mutant(m: Mutant, files: list[str], args, *, baseline: bool = False) -> dict:
    """Apply ``m`` to a fresh copy (``baseline``: no patch, ``m.tests`` = every mapped file) and run both checks
    in one child process (one import of torch and SymPy; the lambdified references are built once)."""
    rec = {**asdict(m), "tests_caught": None, "tests_status": None, "verify_caught": None, "claims_failed": []}
    with tempfile.TemporaryDirectory(prefix="elbo-mutant-") as tmp:
        copy = Path(tmp)
        _copy_project(SOURCE, copy, files)
        if args.tests_rev:
            _old_tests(copy, args.tests_rev)
        for name in args.drop_tests:  # e.g. the tests written to kill a mutant, to show it survives the rest
            (copy / name).unlink(missing_ok=True)
        if not baseline:
            path = copy / m.file
            src = path.read_text(encoding="utf-8")
            if src.count(m.old) != 1:
                rec["error"] = "patch does not apply"
                return rec
            path.write_text(src.replace(m.old, m.new), encoding="utf-8")
        if args.full_tests:
            tests = "tests"
        elif args.tests:
            tests = ";".join(args.tests)
        else:
            tests = ";".join(t for t in m.tests if (copy / t.split("::")[0]).exists()) or "-"
        tests = "-" if args.verify_only else tests
        full = args.full_verify or m.file.startswith("elbo_lab/symbolic/")
        claims = "-" if args.tests_only else ("all" if full else "numeric")
        rc, out, secs = _run([sys.executable, "-c", CHILD, str(copy), tests, claims], copy, _env(copy), args.timeout)
        rec["seconds"] = round(secs, 1)
        lines = out.splitlines()
        if tests != "-":
            trc = next((int(x.split("=")[1]) for x in lines if x.startswith("TESTS_RC=")), None)
            if rc == -9:  # too slow (e.g. a heavily loaded machine): no verdict, reported, never counted as caught
                rec["tests_status"], rec["tests_caught"] = "timeout", None
            elif trc is None:  # the child died before pytest finished (import error, crash)
                rec["tests_status"], rec["tests_caught"] = f"child exited {rc} before the tests finished", True
                rec["tail"] = out[-600:]
            else:
                rec["tests_status"] = {0: "passed", 1: "failed"}.get(trc, f"pytest exit {trc}")
                rec["tests_caught"] = trc != 0
                if trc not in (0, 1):
                    rec["tail"] = out[-600:]
        if claims != "-":
            line = next((x for x in lines if x.startswith("FAILED_CLAIMS=")), None)
            if line is None and rc == -9:
                rec["claims_failed"], rec["verify_status"] = [], "timeout"
            elif line is None:  # verify itself could not run (e.g. the mutant broke an import): caught, noted
                rec["claims_failed"] = [f"(verify did not finish: exit {rc})"]
                rec.setdefault("tail", out[-600:])
            else:
                rec["claims_failed"] = [c for c in line.split("=", 1)[1].split(",") if c]
            rec["verify_caught"] = None if rec.get("verify_status") == "timeout" else bool(rec["claims_failed"])
    return rec


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--only", action="append", default=[], help="run mutants whose id contains this (repeatable)")
    p.add_argument("--tests-only", action="store_true")
    p.add_argument("--verify-only", action="store_true")
    p.add_argument("--full-tests", action="store_true", help="the whole default test suite per mutant (slow)")
    p.add_argument("--full-verify", action="store_true", help="include the SymPy step proofs E*.derivation")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per child process (default 900)")
    p.add_argument("--tests-rev", metavar="REV", help="use tests/ from this git revision (e.g. the suite before a fix)")
    p.add_argument("--tests", nargs="+", default=[], metavar="FILE", help="run these test files for every mutant")
    p.add_argument("--drop-tests", nargs="+", default=[], metavar="FILE", help="delete these test files in the copy")
    p.add_argument("--no-baseline", action="store_true", help="skip the unpatched run (it must pass)")
    p.add_argument("--json", metavar="FILE", help="write the per-mutant results as JSON")
    p.add_argument("--list", action="store_true", help="print the catalogue and exit")
    p.add_argument("--check", action="store_true", help="check that every patch applies, and exit")
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a kill still removes the temporary copies

    problems = check_catalogue()
    if args.list:
        for m in CATALOGUE:
            print(f"{m.id:32s} {m.family:18s} {m.file:28s} {m.why}")
        print(f"{len(CATALOGUE)} mutants")
    if problems:
        print("catalogue out of date:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    if args.check or args.list:
        print(f"catalogue OK: {len(CATALOGUE)} mutants, every patch applies exactly once")
        return 0

    chosen = [m for m in CATALOGUE if not args.only or any(s in m.id for s in args.only)]
    files = _project_files(ROOT)
    snapshot = tempfile.TemporaryDirectory(prefix="elbo-mutation-src-")  # edits made while it runs do not leak in
    _copy_project(ROOT, Path(snapshot.name), files)
    global SOURCE
    SOURCE = Path(snapshot.name)
    t0 = time.perf_counter()
    if not args.no_baseline:  # the unpatched copy must pass, or every mutant would look caught
        mapped = tuple(sorted({t for m in chosen for t in m.tests}))
        base = run_mutant(Mutant("baseline", "-", "-", "", "", mapped), files, args, baseline=True)
        if base["tests_caught"] or base["verify_caught"]:
            print(f"the unpatched project does not pass: tests {base['tests_status']}, failing claims "
                  f"{base['claims_failed']}\n{base.get('tests_tail', '')}", file=sys.stderr)  # fmt: skip
            return 2
        print(f"baseline (no patch): {len(mapped)} mapped test files pass, verify passes", flush=True)
    results = []
    for i, m in enumerate(chosen, 1):
        r = run_mutant(m, files, args)
        results.append(r)
        t = "-" if r["tests_caught"] is None else ("caught" if r["tests_caught"] else "SURVIVED")
        v = "-" if r["verify_caught"] is None else ("caught" if r["verify_caught"] else "SURVIVED")
        claims = ",".join(r["claims_failed"][:3]) + ("…" if len(r["claims_failed"]) > 3 else "")
        print(f"[{i:2d}/{len(chosen)}] {m.id:32s} tests {t:8s} verify {v:8s} {claims}", flush=True)
    wall = time.perf_counter() - t0
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = cpu.ru_utime + cpu.ru_stime
    n = len(results)
    summary = {"mutants": n}
    if not args.verify_only:
        caught = sum(bool(r["tests_caught"]) for r in results)
        summary["tests"] = f"{caught}/{n}"
        print(f"\ntests  ({'full suite' if args.full_tests else 'mapped test files'}): {caught}/{n} mutants caught")
    if not args.tests_only:
        caught = sum(bool(r["verify_caught"]) for r in results)
        summary["verify"] = f"{caught}/{n}"
        scope = "all claims" if args.full_verify else "all claims except E*.derivation"
        print(f"verify ({scope}): {caught}/{n} mutants caught")
    timeouts = [r["id"] for r in results if "timeout" in (r["tests_status"], r.get("verify_status"))]
    if timeouts:
        print(f"no verdict (timeout, raise --timeout): {', '.join(timeouts)}")
    for key in ("tests_caught", "verify_caught"):
        missed = [r["id"] for r in results if r[key] is False]
        if missed:
            print(f"survivors ({key.split('_')[0]}): {', '.join(missed)}")
    print(f"{n} mutants in {wall:.0f} s wall, {cpu_s:.0f} s CPU (child processes); load {os.getloadavg()[0]:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "results": results}, indent=1, ensure_ascii=False))
    all_caught = not timeouts and all(
        r["tests_caught"] is not False and r["verify_caught"] is not False for r in results
    )
    return 0 if all_caught else 1


if __name__ == "__main__":
    sys.exit(main())

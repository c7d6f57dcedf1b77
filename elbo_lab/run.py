"""``elbo-lab run``: every derivation, check and trained model in one report with plots.

The pipeline composes the layers below it and adds no mathematics of its own.  Each stage writes its result
to ``DIR/stages/<stage>.json`` (atomically) when it finishes; running again with the same DIR skips finished
stages and resumes interrupted training from its checkpoint, so Ctrl-C loses at most the stage in progress.
``DIR/run.json`` marks a directory as ours (a non-empty directory without it is refused).

Budgets: ``quick`` (the default) fits in about 5 minutes on a 2-core CPU; ``full`` is meant for a GPU.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .io import atomic_write_json, atomic_write_text, claim_output_dir

__all__ = ["BUDGETS", "Budget", "Pipeline", "run_pipeline"]

MARKER = "run.json"
LN2 = math.log(2.0)


@dataclass(frozen=True)
class Budget:
    vae_epochs: int
    vae_iwae_k: int
    ddpm_minutes: float
    ddpm_eval_images: int  # test images for the headline importance-sampled bound
    ddpm_full_images: int  # test images for the full (every step) per-term breakdown
    mc_images: int  # images for the Monte Carlo convergence figure
    samples: int  # images per sample grid
    ddpm_overrides: tuple = ()  # (name, value) pairs overriding elbo_lab.ddpm.train.TrainConfig defaults
    vae_overrides: tuple = ()  # ... and elbo_lab.vae.train.TrainConfig


BUDGETS = {
    "quick": Budget(
        vae_epochs=60,
        vae_iwae_k=1000,
        ddpm_minutes=2.0,
        ddpm_eval_images=360,
        ddpm_full_images=24,
        mc_images=24,
        samples=32,
    ),
    # a seconds-long pass through every stage, for the tests (not offered on the command line)
    "smoke": Budget(
        vae_epochs=2,
        vae_iwae_k=20,
        ddpm_minutes=0.05,
        ddpm_eval_images=8,
        ddpm_full_images=4,
        mc_images=4,
        samples=8,
        ddpm_overrides=(
            ("T", 40),
            ("base_channels", 8),
            ("eval_every", 5),
            ("val_samples", 4),
            ("attention", False),
            ("batch_size", 16),
        ),
        vae_overrides=(("eval_samples", 2),),
    ),
    "full": Budget(
        vae_epochs=300,
        vae_iwae_k=5000,
        ddpm_minutes=30.0,
        ddpm_eval_images=360,
        ddpm_full_images=360,
        mc_images=100,
        samples=64,
    ),
}


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, torch.Tensor):
        return _jsonable(x.tolist())
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


class Pipeline:
    """Resumable stages in ``out``; ``log`` prints progress lines."""

    def __init__(self, out: str | Path, *, mode: str, seed: int, device: str, log: Callable[[str], None] = print):
        self.out = Path(out)
        self.mode, self.seed, self.device_spec = mode, seed, device
        self.budget = BUDGETS[mode]
        self.log = log
        self.timings: dict[str, float] = {}
        self._claim_dir()

    # ------------------------------------------------------------------ output directory
    def _claim_dir(self) -> None:
        """One run per directory: marker ``run.json`` + a lock while running (:func:`elbo_lab.io.claim_output_dir`)."""
        self.lock = claim_output_dir(self.out, tool="elbo-lab run", config={"mode": self.mode, "seed": self.seed})
        (self.out / "stages").mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ stages
    def stage(self, name: str, fn: Callable[[], dict]) -> dict:
        path = self.out / "stages" / f"{name}.json"
        if path.exists():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                if not isinstance(data, dict):
                    raise ValueError
            except (OSError, ValueError):  # truncated or damaged by hand: compute the stage again
                self.log(f"[{name}] {path} is unreadable; computing the stage again")
            else:
                self.log(f"[{name}] done earlier; reusing {path}")
                self.timings[name] = data.get("_seconds", 0.0)
                return data
        self.log(f"[{name}] …")
        t0 = time.perf_counter()
        data = _jsonable(fn())
        data["_seconds"] = round(time.perf_counter() - t0, 2)
        self.timings[name] = data["_seconds"]
        atomic_write_json(path, data)
        self.log(f"[{name}] {data['_seconds']:.1f} s")
        return data


# ====================================================================== the stages


def stage_derivations() -> dict:
    from .symbolic import verify_all

    return {"derivations": [r.to_dict() for r in verify_all()]}


def stage_checks(seed: int) -> dict:
    from .checks.registry import run_claims

    return {"claims": [r.to_dict() for r in run_claims(seed=seed)]}


def stage_weights() -> dict:
    from .diffusion import eps_weight
    from .schedule import NoiseSchedule

    out = {}
    for s in (NoiseSchedule.linear(1000), NoiseSchedule.cosine(1000)):
        for v in ("posterior", "beta"):
            out[f"{s.name}, σ²={'β̃' if v == 'posterior' else 'β'}"] = eps_weight(s, v).tolist()
    return {"weights": out}


def stage_oracle_gap() -> dict:
    from .oracles import GaussianData, gap_vs_T
    from .schedule import NoiseSchedule

    data = GaussianData.random(4, seed=0)
    Ts = [10, 100, 1000, 10000]
    rows = []
    for make in (NoiseSchedule.linear, NoiseSchedule.cosine):
        for variance in ("beta", "posterior"):
            rows += gap_vs_T(data, make, Ts, variance)
    return {"Ts": Ts, "rows": rows, "entropy": data.entropy(), "dim": data.dim}


def stage_vae(pipe: Pipeline, dataset) -> dict:
    from .oracles.ppca import PPCA, LinearEncoder
    from .vae.estimators import estimate
    from .vae.model import VAEConfig
    from .vae.train import CHECKPOINT_NAME, TrainConfig, load_vae, train_vae

    out = pipe.out / "vae"
    cfg = TrainConfig(
        epochs=pipe.budget.vae_epochs, iwae_k=pipe.budget.vae_iwae_k, seed=pipe.seed, **dict(pipe.budget.vae_overrides)
    )
    model_cfg = VAEConfig(shape=dataset.shape, levels=dataset.levels)
    resume = (out / CHECKPOINT_NAME).exists()
    metrics = train_vae(dataset, model_cfg, cfg, out, resume=resume, progress=True, log=pipe.log)

    # the bound against k on the test split (ELBO = IWAE_1 in expectation)
    model = load_vae(out / CHECKPOINT_NAME)
    g = torch.Generator().manual_seed(pipe.seed + 7)
    ks = [k for k in (1, 10, 100, 1000, 5000) if k <= max(pipe.budget.vae_iwae_k, 10)]
    iw = {}
    for k in ks:
        e, _ = estimate(model, dataset.test, "iwae", k=k, generator=g)
        iw[k] = e.to_dict()
    samples = model.sample(pipe.budget.samples, torch.Generator().manual_seed(pipe.seed + 8))

    # linear-Gaussian oracle on the same images (as continuous vectors): IWAE_k → exact log p(x)
    x_tr = dataset.train.flatten(1).double()
    x_te = dataset.test.flatten(1).double()[:100]
    ppca = PPCA.fit(x_tr, 8)
    ex = ppca.exact_encoder()
    enc = LinearEncoder(ex.a * 0.9, ex.c, ex.var * 2.0)  # a deliberately imperfect encoder
    model_o = ppca.with_encoder(enc)
    logp = ppca.log_marginal(x_te)
    oracle = {"elbo_gap_nats": float((logp - model_o.exact_elbo(x_te)).mean()), "ks": [], "gap": [], "gap_se": []}
    for k in (1, 10, 100, 1000):
        _, vals = estimate(model_o, x_te, "iwae", k=k, generator=g)
        gap = logp - vals
        oracle["ks"].append(k)
        oracle["gap"].append(float(gap.mean()))
        oracle["gap_se"].append(float(gap.std() / math.sqrt(len(gap))))
    return {"metrics": metrics, "iwae_by_k": iw, "samples": samples.tolist(), "ppca_oracle": oracle}


def stage_ddpm(pipe: Pipeline) -> dict:
    from .ddpm.train import TrainConfig, train

    out = pipe.out / "ddpm"
    cfg = TrainConfig(
        minutes=pipe.budget.ddpm_minutes, seed=pipe.seed, device=pipe.device_spec, **dict(pipe.budget.ddpm_overrides)
    )
    resume = (out / "last.pt").exists()
    summary = train(cfg, out, resume=resume, progress=True, log=pipe.log)
    metrics = json.loads((out / "metrics.json").read_text())
    return {"summary": summary, "metrics": metrics}


def stage_ddpm_eval(pipe: Pipeline, dataset) -> dict:
    from .bound import estimate_proposal, simple_term, variational_bound
    from .ddpm.checkpoint import load_model
    from .ddpm.model import device_description, resolve_device
    from .ddpm.sampling import ancestral_sample
    from .diffusion import q_sample

    b = pipe.budget
    device = resolve_device(pipe.device_spec)
    model, ckpt = load_model(pipe.out / "ddpm" / "best.pt", device)
    cfg = ckpt["config"]
    s = model.schedule
    K = dataset.levels
    x = dataset.test.to(device, torch.float64)
    kw = dict(variance=cfg["variance"], decoder="discretized", levels=K, model_dtype=torch.float64)

    t0 = time.perf_counter()
    head = variational_bound(
        model,
        s,
        x[: b.ddpm_eval_images],
        estimator="importance",
        num_samples=64,
        generator=pipe.seed,
        bits_per_dim=True,
        **kw,
    )
    head_s = time.perf_counter() - t0
    xf = x[: b.ddpm_full_images]
    t0 = time.perf_counter()
    full = variational_bound(model, s, xf, estimator="full", generator=pipe.seed + 1, bits_per_dim=True, **kw)
    full_s = time.perf_counter() - t0

    # Monte Carlo convergence on the same images: estimate ± stderr against network evaluations
    # (the importance proposal comes from a pilot on 4 other test images, counted apart: it is paid once per model)
    pilot = x[b.ddpm_full_images : b.ddpm_full_images + 4]
    proposal = estimate_proposal(model, s, pilot, generator=pipe.seed + 9, **kw)
    curves = {}
    for est in ("uniform", "stratified", "importance"):
        pts = []
        for m in (2, 4, 8, 16, 32):
            extra = {"proposal": proposal} if est == "importance" else {}
            r = variational_bound(
                model,
                s,
                xf,
                estimator=est,
                num_samples=m,
                generator=pipe.seed + 2 + m,
                bits_per_dim=True,
                **kw,
                **extra,
            )
            pts.append((r.n_evals, r.mean(), r.mean_stderr("estimator")))
        curves[est] = [list(c) for c in zip(*pts)]

    # per-step ε-MSE of the trained model (what L_simple averages) on log-spaced steps
    g = torch.Generator(device=device).manual_seed(pipe.seed + 3)
    ks = sorted(set(np.unique(np.geomspace(1, s.T, 60).astype(int) - 1).tolist()))
    mse = []
    with torch.no_grad():
        for k in ks:
            kk = torch.full((len(xf),), k, dtype=torch.long, device=device)
            noise = torch.randn(xf.shape, generator=g, device=device, dtype=torch.float64)
            out = model(q_sample(s, xf, kk, noise), kk)
            eps_hat = out[0] if isinstance(out, tuple) else out
            mse.append(float(simple_term(noise, eps_hat.double()).mean()) * xf[0].numel())  # E‖ε − ε̂‖²

    gs = torch.Generator(device=device).manual_seed(pipe.seed + 4)
    samples = ancestral_sample(model, dataset.shape, b.samples, variance=cfg["variance"], generator=gs)
    from .diffusion import eps_weight

    return {
        "device": device_description(device),
        "config": cfg,
        "headline": {
            "bits_per_dim": head.mean(),
            "stderr": head.mean_stderr(),
            "images": head.N,
            "n_evals": head.n_evals,
            "seconds": head_s,
            "estimator": "importance, 64 steps/image",
        },
        "full": {
            "bits_per_dim": full.mean(),
            "stderr_images": full.mean_stderr(),
            "images": full.N,
            "n_evals": full.n_evals,
            "seconds": full_s,
            "prior": float(full.prior.mean()),
            "decoder": float(full.decoder.mean()),
            "terms": full.terms.mean(0).tolist(),
            "terms_se": (full.terms.std(0) / math.sqrt(full.N)).tolist(),
        },
        "mc_curves": curves,
        "per_step_mse": {"t": [k + 1 for k in ks], "mse": mse},
        "weights": eps_weight(s, cfg["variance"] if cfg["variance"] != "learned" else "posterior").tolist(),
        "samples": samples.cpu().tolist(),
    }


# ====================================================================== figures and report


def draw_figures(pipe: Pipeline, r: dict) -> dict[str, str]:
    """All figures as PNG + SVG in DIR; returns name → PNG file name (relative to DIR)."""
    from . import figures as F

    out, figs = pipe.out, {}

    def save(fig, name):
        F.save(fig, out, name)
        figs[name] = f"{name}.png"

    vae_m = r["vae"]["metrics"]
    vae_test = vae_m["bounds"]["test"]
    base_pp = vae_m["baselines"]["per_pixel"]["test"]["bits_per_dim"] if "per_pixel" in vae_m["baselines"] else None
    if "ddpm" in r:
        hist = r["ddpm"]["metrics"]["history"]
        tr = [h for h in hist if "train_simple" in h]
        ev = [h for h in hist if "heldout_bpd" in h]
        save(
            F.fig_bound_vs_loss(
                [p["step"] for p in tr],
                [p["train_simple"] for p in tr],
                [p["step"] for p in ev],
                [p["heldout_bpd"] for p in ev],
                [p["heldout_stderr"] for p in ev],
                vae_bpd=vae_test["iwae"]["bits_per_dim"],
                vae_label="VAE (IWAE, test)",
                baseline_bpd=base_pp,
            ),
            "bound_vs_loss",
        )
        e = r["ddpm_eval"]
        fb = e["full"]
        save(
            F.fig_bound_terms(
                fb["terms"],
                fb["prior"],
                fb["decoder"],
                terms_se=fb["terms_se"],
                label=f"DDPM ({fb['images']} test images)",
            ),
            "bound_terms",
        )
        mse = np.full(len(e["weights"]), np.nan)
        mse[np.asarray(e["per_step_mse"]["t"]) - 1] = e["per_step_mse"]["mse"]
        ok = ~np.isnan(mse)
        save(F.fig_per_step_mse(mse[ok], np.asarray(e["weights"])[ok], dim=pipe.dim), "per_step_mse")
        save(
            F.fig_mc_convergence(
                {k: tuple(v) for k, v in e["mc_curves"].items()},
                exact=fb["bits_per_dim"],
                exact_label=f"full ({fb['n_evals']:,} evaluations)",
            ),
            "mc_convergence",
        )
    save(F.fig_eps_weights(r["weights"]["weights"]), "eps_weights")
    og = r["oracle_gap"]
    gaps = {}
    for row in og["rows"]:
        gaps.setdefault(f"{row['schedule'].split('(')[0]}, σ²={'β' if row['variance'] == 'beta' else 'β̃'}", []).append(
            row["gap_model_bpd"]
        )
    save(F.fig_oracle_gap(og["Ts"], gaps), "oracle_gap")
    iw = r["vae"]["iwae_by_k"]
    ks = sorted(int(k) for k in iw)
    el = vae_test["elbo_analytic"]
    po = r["vae"]["ppca_oracle"]
    save(
        F.fig_vae_iwae(
            ks,
            [iw[str(k)]["bits_per_dim"] for k in ks],
            [iw[str(k)]["bits_per_dim_stderr"] for k in ks],
            el["bits_per_dim"],
            el["bits_per_dim_stderr"],
            oracle_ks=po["ks"],
            oracle_gap=po["gap"],
        ),
        "vae_iwae",
    )
    grids = {"real test digits": np.asarray(pipe.dataset.test[: pipe.budget.samples])}
    if "ddpm_eval" in r:
        grids["DDPM samples"] = np.asarray(r["ddpm_eval"]["samples"])
    grids["VAE samples"] = np.asarray(r["vae"]["samples"])
    save(F.fig_samples(grids), "samples")
    return figs


def build_report(pipe: Pipeline, r: dict, figs: dict[str, str], claims: list[dict]):
    from .report import Report

    rep = Report("ELBO Lab — the guide's mathematics, derived and checked")
    bad = [c for c in claims if not c["passed"]]
    bad_d = [d for d in r["derivations"]["derivations"] if not d["ok"]]
    top = rep.section("Summary")
    if bad or bad_d:
        top.alert(
            f"{len(bad)} check(s) and {len(bad_d)} derivation(s) FAILED: "
            + ", ".join([c["id"] for c in bad] + [d["name"] for d in bad_d])
        )
    else:
        top.text(f"All {len(r['derivations']['derivations'])} derivations and all {len(claims)} checks pass.")
    vae_m = r["vae"]["metrics"]
    b = vae_m["bounds"]
    rows = [
        ["uniform over K levels (exact)", f"{vae_m['baselines']['uniform']['test']['bits_per_dim']:.3f}", "-"],
        ["per-pixel categorical (exact)", f"{vae_m['baselines']['per_pixel']['test']['bits_per_dim']:.3f}", "-"],
        [
            "VAE −ELBO (analytic KL)",
            f"{b['test']['elbo_analytic']['bits_per_dim']:.3f}",
            f"{b['test']['elbo_analytic']['bits_per_dim_stderr']:.3f}",
        ],
        [
            f"VAE −IWAE (k = {b['test']['iwae']['k']})",
            f"{b['test']['iwae']['bits_per_dim']:.3f}",
            f"{b['test']['iwae']['bits_per_dim_stderr']:.3f}",
        ],
    ]
    if "ddpm_eval" in r:
        h = r["ddpm_eval"]["headline"]
        rows.append([f"DDPM bound ({h['estimator']})", f"{h['bits_per_dim']:.3f}", f"{h['stderr']:.3f}"])
        f = r["ddpm_eval"]["full"]
        rows.append(
            [
                f"DDPM bound, full, first {f['images']} test images",
                f"{f['bits_per_dim']:.3f}",
                f"{f['stderr_images']:.3f}",
            ]
        )
    top.text(
        "Test-split negative-log-likelihood bounds in bits/dim (lower is better; a bound is ≥ the model's "
        "−log p(x)/(D ln 2)). Standard errors over images."
    )
    top.table(["model", "bits/dim", "± stderr"], rows)
    top.text(
        f"Mode: {pipe.mode}; seed {pipe.seed}; device {r.get('ddpm_eval', {}).get('device', 'cpu')}; "
        f"stage times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in pipe.timings.items())
    )

    sec = rep.section("Checks")
    sec.table(
        ["claim", "expected", "observed", "tolerance", ""],
        [
            [f"{c['id']}: {c['statement']}", c["expected"], c["observed"], c["tolerance"], "✓" if c["passed"] else "✗"]
            for c in claims
        ],
    )

    captions = {
        "bound_vs_loss": "1. L_simple (left) and the held-out bound in bits/dim (right) over training; the VAE's bound "
        "and the per-pixel baseline for reference.",
        "bound_terms": "2. The trained DDPM's bound term by term over t (bits/dim, log scale); L_0 and L_T marked.",
        "eps_weights": "3. The weights w_t that turn the ε-MSE into the bound (E9), against L_simple's constant 1.",
        "per_step_mse": "4. The trained model's per-step ε-MSE next to w_t·MSE: where the bound's mass lies.",
        "oracle_gap": "5. Gaussian oracle: bound minus the model's exact NLL (bits/dim) against T.",
        "mc_convergence": "6. Monte Carlo convergence: estimate ± 2 stderr against network evaluations.",
        "vae_iwae": "7. VAE: −ELBO and −IWAE_k against k; the linear-Gaussian oracle's gap to log p(x).",
        "samples": "8. Samples from the DDPM and the VAE next to real test digits.",
    }
    sec = rep.section("Figures")
    for name, cap in captions.items():
        if name in figs:
            sec.figure(figs[name], cap)

    sec = rep.section("Gaussian oracle: the bound's gap against T")
    sec.table(
        ["schedule", "σ²", "T", "bound (nats)", "exact −log p_θ (nats)", "gap (bits/dim)"],
        [
            [
                row["schedule"],
                row["variance"],
                row["T"],
                f"{row['bound']:.5f}",
                f"{row['cross_entropy']:.5f}",
                f"{row['gap_model_bpd']:.3e}",
            ]
            for row in r["oracle_gap"]["rows"]
        ],
    )

    sec = rep.section("Derivations")
    for d in r["derivations"]["derivations"]:
        sec.text(
            f"{'✓' if d['ok'] else '✗'} {d['equation']} {d['title']} — guide: {d['guide_section']} "
            f"({d['seconds']:.2f} s; `elbo-lab derive {d['name']}`)"
        )
        for i, st in enumerate(d["steps"], 1):
            sec.text(f"{'✓' if st['checked'] else '✗'} {i}. {st['statement']} — {st['justification']}")
            sec.math(st["latex"])
    return rep


def run_pipeline(
    out: str | Path = "results",
    *,
    mode: str = "quick",
    seed: int = 0,
    device: str = "auto",
    log: Callable[[str], None] = print,
) -> int:
    """Run (or continue) the whole pipeline; returns 0 when every derivation and check passes, else 1."""
    from .data import load_digits
    from .ddpm.model import resolve_device
    from .provenance import provenance

    resolve_device(device)  # `--device cuda` without a GPU: a one-line error before any work
    t_start = time.perf_counter()
    pipe = Pipeline(out, mode=mode, seed=seed, device=device, log=log)
    pipe.dataset = load_digits()
    pipe.dim = pipe.dataset.dim
    r = {}
    r["derivations"] = pipe.stage("derivations", stage_derivations)
    r["checks"] = pipe.stage("checks", lambda: stage_checks(seed))
    r["weights"] = pipe.stage("weights", stage_weights)
    r["oracle_gap"] = pipe.stage("oracle_gap", stage_oracle_gap)
    r["vae"] = pipe.stage("vae", lambda: stage_vae(pipe, pipe.dataset))
    r["ddpm"] = pipe.stage("ddpm", lambda: stage_ddpm(pipe))
    r["ddpm_eval"] = pipe.stage("ddpm_eval", lambda: stage_ddpm_eval(pipe, pipe.dataset))

    log("[figures] …")
    figs = draw_figures(pipe, r)
    claims = r["checks"]["claims"]
    rep = build_report(pipe, r, figs, claims)
    atomic_write_text(pipe.out / "report.md", rep.to_markdown())
    atomic_write_text(pipe.out / "report.html", rep.to_html())
    ok = all(c["passed"] for c in claims) and all(d["ok"] for d in r["derivations"]["derivations"])
    results = {
        **provenance(r["ddpm_eval"].get("device")),
        "mode": mode,
        "seed": seed,
        "budget": asdict(pipe.budget),
        "all_checks_pass": ok,
        "seconds": {**pipe.timings, "total_this_invocation": round(time.perf_counter() - t_start, 1)},
        "units": "bits/dim = nats / (D ln 2); model numbers are negative-log-likelihood bounds unless marked ELBO",
        "derivations": [
            {k: d[k] for k in ("name", "equation", "ok", "seconds")} for d in r["derivations"]["derivations"]
        ],
        "checks": claims,
        "vae": {k: r["vae"]["metrics"][k] for k in ("bounds", "baselines", "best_epoch", "epochs_run", "parameters")},
        "vae_iwae_by_k": r["vae"]["iwae_by_k"],
        "ppca_oracle": r["vae"]["ppca_oracle"],
        "ddpm": {k: v for k, v in r["ddpm_eval"].items() if k not in ("samples",)},
        "ddpm_training": r["ddpm"]["summary"],
        "oracle_gap": r["oracle_gap"]["rows"],
        "figures": {k: [v, v.replace(".png", ".svg")] for k, v in figs.items()},
    }
    atomic_write_json(pipe.out / "results.json", _jsonable(results))
    log(f"report: {pipe.out / 'report.html'} (and report.md, results.json, figures as PNG + SVG)")
    if not ok:
        log("SOME CHECKS FAILED — see the top of the report")
    pipe.lock.release()
    return 0 if ok else 1

"""``elbo-lab run``: every derivation, check and trained model in one report with plots.

The pipeline composes the layers below it and adds no mathematics of its own.  Each stage writes its result
to ``DIR/stages/<stage>.json`` (atomically) when it finishes; running again with the same DIR skips finished
stages and resumes interrupted training from its checkpoint, so Ctrl-C loses at most the stage in progress.
``DIR/run.json`` marks a directory as ours (a non-empty directory without it is refused).

Budgets are counts (epochs, optimizer steps, images, network evaluations), never minutes, so the same command and
seed give the same numbers whatever else the machine is doing (``experiments/reproducibility.py`` checks it);
``--minutes`` replaces the DDPM's step budget by a wall-clock one for those who want it (and says so).  Torch runs
with a deliberate thread count (:mod:`elbo_lab.threads`, ``--threads``, recorded in results.json).
``quick`` (the default) takes about 5 minutes on an idle 2-core CPU; ``full`` is meant for a GPU.

Every figure is drawn from a data table written beside it (``NAME.json``, :mod:`elbo_lab.figures`); the per-step
figures come from one table (:func:`elbo_lab.reduction.per_step_table`) whose total is the report's full bound.
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

from .errors import ElboLabError
from .io import atomic_write_json, atomic_write_text, claim_output_dir

__all__ = ["BUDGETS", "Budget", "Pipeline", "run_pipeline"]

MARKER = "run.json"
LN2 = math.log(2.0)


@dataclass(frozen=True)
class Budget:
    vae_epochs: int
    vae_iwae_k: int
    ddpm_steps: int  # optimizer steps (the budget is a count: reproducible whatever the load)
    ddpm_eval_every: int  # steps between held-out evaluations (the training curve has steps/eval_every + 1 points)
    ddpm_eval_images: int  # test images for the headline importance-sampled bound
    ddpm_full_images: int  # test images for the full (every step) per-step table and its figures
    mc_images: int  # images for the Monte Carlo convergence figure (the first of the full images)
    samples: int  # images per sample grid
    ddpm_overrides: tuple = ()  # (name, value) pairs overriding elbo_lab.ddpm.train.TrainConfig defaults
    vae_overrides: tuple = ()  # ... and elbo_lab.vae.train.TrainConfig


# The default DDPM budget (calibrated in CPU time with one torch thread, see docs/ddpm.md and issue 10): the quick
# run stays within about 5 minutes on an idle 2-core machine and the DDPM's test bound beats the VAE's IWAE.
QUICK_STEPS = 500
HEADLINE_SAMPLES = 64  # steps per image of the headline importance-sampled bound
REVERSE_CHAINS = 4  # sampling chains shown in the reverse-process strip
FORWARD_STEPS = (1, 10, 50, 100, 200, 400, 600, 800, 1000)  # paper steps of the forward-noising strip (T = 1000)

BUDGETS = {
    "quick": Budget(
        vae_epochs=60,
        vae_iwae_k=1000,
        ddpm_steps=QUICK_STEPS,
        ddpm_eval_every=QUICK_STEPS // 20,
        ddpm_eval_images=360,
        ddpm_full_images=24,
        mc_images=24,
        samples=32,
    ),
    # a seconds-long pass through every stage, for the tests (not offered on the command line)
    "smoke": Budget(
        vae_epochs=2,
        vae_iwae_k=20,
        ddpm_steps=20,
        ddpm_eval_every=4,
        ddpm_eval_images=8,
        ddpm_full_images=16,
        mc_images=4,
        samples=8,
        ddpm_overrides=(
            ("T", 40),
            ("base_channels", 8),
            ("val_samples", 2),
            ("attention", False),
            ("batch_size", 16),
            ("log_every", 2),
        ),
        vae_overrides=(("eval_samples", 2),),
    ),
    "full": Budget(
        vae_epochs=300,
        vae_iwae_k=5000,
        ddpm_steps=20000,
        ddpm_eval_every=500,
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

    def __init__(
        self,
        out: str | Path,
        *,
        mode: str,
        seed: int,
        device: str,
        ddpm_minutes: float | None = None,
        log: Callable[[str], None] = print,
    ):
        import torch

        self.out = Path(out)
        self.mode, self.seed, self.device_spec = mode, seed, device
        self.budget = BUDGETS[mode]
        self.ddpm_minutes = ddpm_minutes  # None: the budget's step count (reproducible); else wall-clock minutes
        self.threads = torch.get_num_threads()
        self.log = log
        self.timings: dict[str, float] = {}
        self.cpu_timings: dict[str, float] = {}
        self._claim_dir()

    @property
    def ddpm_budget(self) -> str:
        if self.ddpm_minutes is not None:
            return f"{self.ddpm_minutes:g} minutes (wall clock: the numbers depend on the machine's load)"
        return f"{self.budget.ddpm_steps} steps"

    # ------------------------------------------------------------------ output directory
    def _claim_dir(self) -> None:
        """One run per directory: marker ``run.json`` + a lock while running (:func:`elbo_lab.io.claim_output_dir`)."""
        self.lock = claim_output_dir(
            self.out,
            tool="elbo-lab run",
            config={
                "mode": self.mode,
                "seed": self.seed,
                "ddpm_budget": self.ddpm_budget,
                "threads": self.threads,
            },
        )
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
                self.cpu_timings[name] = data.get("_cpu_seconds", 0.0)
                return data
        self.log(f"[{name}] …")
        t0, c0 = time.perf_counter(), time.process_time()
        data = _jsonable(fn())
        data["_seconds"] = round(time.perf_counter() - t0, 2)
        data["_cpu_seconds"] = round(time.process_time() - c0, 2)  # this process's CPU time (load-insensitive)
        self.cpu_timings[name] = data["_cpu_seconds"]
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
    b = pipe.budget
    budget = {"steps": b.ddpm_steps} if pipe.ddpm_minutes is None else {"minutes": pipe.ddpm_minutes}
    cfg = TrainConfig(
        **budget, eval_every=b.ddpm_eval_every, seed=pipe.seed, device=pipe.device_spec, **dict(b.ddpm_overrides)
    )
    resume = (out / "last.pt").exists()
    summary = train(cfg, out, resume=resume, progress=True, log=pipe.log)
    metrics = json.loads((out / "metrics.json").read_text())
    return {"summary": summary, "metrics": metrics}


def oracle_for(dataset):
    """The Gaussian oracle of the reduction figure: N(m, S) with the digits' training mean and covariance, plus the
    variance h²/12 of uniform dequantization noise over a bin of width h = 2/(K − 1) (so S is positive definite)."""
    from .oracles import GaussianData

    x = dataset.train.flatten(1).double()
    h = 2.0 / (dataset.levels - 1)
    cov = torch.cov(x.T) + (h * h / 12.0) * torch.eye(x.shape[1], dtype=torch.float64)
    return GaussianData(x.mean(0), cov)


def stage_ddpm_eval(pipe: Pipeline, dataset) -> dict:
    from . import diffusion as D
    from .bound import ModelSpec, estimate_proposal, variational_bound
    from .cite import citation
    from .ddpm.checkpoint import load_model
    from .ddpm.model import device_description, resolve_device
    from .ddpm.sampling import ancestral_sample
    from .reduction import forward_strip, oracle_per_step_table, per_step_table, reverse_strip_steps

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
        num_samples=HEADLINE_SAMPLES,
        generator=pipe.seed,
        bits_per_dim=True,
        **kw,
    )
    head_s = time.perf_counter() - t0

    # every step for the first ddpm_full_images test images: the per-step figures and the full bound
    xf = x[: b.ddpm_full_images]
    t0 = time.perf_counter()
    table = per_step_table(model, s, xf, variance=cfg["variance"], levels=K, generator=pipe.seed + 1)
    full_s = time.perf_counter() - t0

    # Monte Carlo convergence on the first mc_images of them: estimate ± stderr against network evaluations
    # (the importance proposal comes from a pilot on 4 other test images, counted apart: it is paid once per model)
    xm = xf[: b.mc_images]
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
                xm,
                estimator=est,
                num_samples=m,
                generator=pipe.seed + 2 + m,
                bits_per_dim=True,
                **kw,
                **extra,
            )
            pts.append((r.n_evals, r.mean(), r.mean_stderr("estimator")))
        curves[est] = {k: list(v) for k, v in zip(("n_evals", "estimate", "stderr"), zip(*pts))}
    mc_full = float(np.mean(table["per_image_total"][: b.mc_images]))

    # samples; the first REVERSE_CHAINS chains are recorded at a few steps (x_t and the model's x̂_0)
    ts = reverse_strip_steps(s.T)
    rec = {"t": [], "xt": [], "x0_hat": []}

    def trace(k, xt, eps):
        if k + 1 in ts:
            kk = torch.full((xt.shape[0],), k, dtype=torch.long, device=xt.device)
            x0 = D.predict_x0(s, xt.double(), kk, eps.double())
            rec["t"].append(k + 1)
            rec["xt"].append(xt[:REVERSE_CHAINS].double().cpu())
            rec["x0_hat"].append(x0[:REVERSE_CHAINS].cpu())

    gs = torch.Generator(device=device).manual_seed(pipe.seed + 4)
    samples = ancestral_sample(model, dataset.shape, b.samples, variance=cfg["variance"], generator=gs, trace=trace)
    reverse = {
        "t": rec["t"],
        "xt": torch.stack(rec["xt"], 1).tolist(),  # (chains, steps, *shape)
        "x0_hat": torch.stack(rec["x0_hat"], 1).tolist(),
        "units": {"xt, x0_hat": "pixel values (data in [−1, 1])", "t": "paper step"},
    }
    fwd_ts = [t for t in FORWARD_STEPS if t <= s.T] if s.T >= 1000 else reverse_strip_steps(s.T)[::-1]
    forward = forward_strip(s.to("cpu"), dataset.test[0], fwd_ts, generator=pipe.seed + 5)
    forward["schedule"] = s.name
    oracle = oracle_per_step_table(oracle_for(dataset), s.to("cpu"), "posterior")

    return {
        "device": device_description(device),
        "config": cfg,
        "headline": {
            "bits_per_dim": head.mean(),
            "stderr": head.mean_stderr(),
            "images": head.N,
            "n_evals": head.n_evals,
            "seconds": head_s,
            "estimator": f"importance, {HEADLINE_SAMPLES} steps/image",
            "model": ModelSpec.from_ddpm_checkpoint(ckpt).describe(),  # the model being bounded (bound.ModelSpec)
            "citation": citation(head),  # the one citation formatter (elbo_lab.cite), as `elbo-lab bound` prints it
        },
        "full": {
            "bits_per_dim": table["total"],
            "stderr_images": table["total_se"],
            "images": table["images"],
            "n_evals": table["n_evals"],
            "seconds": full_s,
            "prior": table["prior"],
            "decoder": table["decoder"],
            "terms": table["term"],
            "terms_se": table["term_se"],
        },
        "per_step": table,
        "oracle_per_step": oracle,
        "mc_curves": {"curves": curves, "full": mc_full, "images": len(xm)},
        "samples": samples.cpu().tolist(),
        "reverse": reverse,
        "forward": forward,
    }


# ====================================================================== figures and report


def figure_tables(pipe: Pipeline, r: dict) -> dict[str, dict]:
    """The data table of every figure (name → dict of lists with its units), from the stage results only."""
    tabs: dict[str, dict] = {}
    vae_m = r["vae"]["metrics"]
    vae_test = vae_m["bounds"]["test"]
    vae_bpd = vae_test["iwae"]["bits_per_dim"]
    base_pp = vae_m["baselines"]["per_pixel"]["test"]["bits_per_dim"] if "per_pixel" in vae_m["baselines"] else None
    if "ddpm" in r:
        hist = r["ddpm"]["metrics"]["history"]
        tr = [h for h in hist if "train_simple" in h]
        ev = [h for h in hist if "heldout_bpd" in h]
        curve = {
            "step": [p["step"] for p in ev],
            "bound": [p["heldout_bpd"] for p in ev],
            "bound_se": [p["heldout_stderr"] for p in ev],
            "simple": [p.get("heldout_simple") for p in ev],
            "simple_se": [p.get("heldout_simple_stderr") for p in ev],
            "estimator": ev[0].get("heldout_estimator", "") if ev else "",
            "n_evals_per_point": ev[0].get("heldout_n_evals") if ev else None,
            "train_step": [p["step"] for p in tr],
            "train_simple": [p["train_simple"] for p in tr],
            "vae_bpd": vae_bpd,
            "per_pixel_bpd": base_pp,
            "units": {
                "bound, bound_se, vae_bpd, per_pixel_bpd": "bits/dim (NLL bound; bound_se: 1 s.e. of the estimator)",
                "simple, simple_se, train_simple": "E||eps - eps_hat||^2 / D (dimensionless)",
                "step": "optimizer step",
            },
        }
        tabs["training_curve"] = curve
        tabs["bound_vs_loss"] = curve
        e = r["ddpm_eval"]
        tab = dict(e["per_step"])
        tab["label"] = f"DDPM ({tab['images']} test images, σ_t²: {tab['variance']})"
        tabs["bound_terms"] = tab
        tabs["per_step_mse"] = tab
        tabs["reduction"] = {
            "rows": {
                f"trained DDPM ({tab['images']} test digits)": tab,
                "Gaussian oracle (digits' mean and covariance, σ_t² = β̃_t)": e["oracle_per_step"],
            },
        }
        mc = e["mc_curves"]
        tabs["mc_convergence"] = {
            "curves": mc["curves"],
            "full": mc["full"],
            "full_n_evals": mc["images"] * len(tab["t"]),
            "images": mc["images"],
            "units": {"estimate, stderr, full": "bits/dim (NLL bound); stderr: 1 s.e. of the estimator (fixed images)"},
        }
        tabs["forward_noising"] = e["forward"]
        tabs["reverse_process"] = e["reverse"]
    tabs["eps_weights"] = {
        "weights": r["weights"]["weights"],
        "units": {"weights": "nats per unit squared error", "index": "t = index + 1"},
    }
    og = r["oracle_gap"]
    gaps: dict[str, list] = {}
    for row in og["rows"]:
        name = f"{row['schedule'].split('(')[0]}, σ²={'β' if row['variance'] == 'beta' else 'β̃'}"
        gaps.setdefault(name, []).append(row["gap_model_bpd"])
    tabs["oracle_gap"] = {
        "Ts": og["Ts"],
        "gaps": gaps,
        "dim": og["dim"],
        "units": {"gaps": "bits/dim (bound − exact NLL of the model)"},
    }
    iw = r["vae"]["iwae_by_k"]
    ks = sorted(int(k) for k in iw)
    el = vae_test["elbo_analytic"]
    po = r["vae"]["ppca_oracle"]
    tabs["vae_iwae"] = {
        "ks": ks,
        "iwae": [iw[str(k)]["bits_per_dim"] for k in ks],
        "iwae_se": [iw[str(k)]["bits_per_dim_stderr"] for k in ks],
        "elbo": el["bits_per_dim"],
        "elbo_se": el["bits_per_dim_stderr"],
        "oracle_ks": po["ks"],
        "oracle_gap": po["gap"],
        "oracle_gap_se": po["gap_se"],
        "units": {"iwae, elbo": "bits/dim (NLL bounds, -IWAE_k and -ELBO)", "oracle_gap": "nats"},
    }
    grids = {"real test digits": np.asarray(pipe.dataset.test[: pipe.budget.samples]).tolist()}
    if "ddpm_eval" in r:
        grids["DDPM samples"] = r["ddpm_eval"]["samples"]
    grids["VAE samples"] = r["vae"]["samples"]
    tabs["samples"] = {"grids": grids, "units": {"grids": "pixel values in [−1, 1]"}}
    return tabs


def draw_figures(pipe: Pipeline, r: dict) -> dict[str, str]:
    """All figures as PNG + SVG + their data table (NAME.json) in DIR; returns name → PNG file name."""
    from . import figures as F

    figs = {}
    for name, tab in figure_tables(pipe, r).items():
        F.save(F.FIGURES[name](tab), pipe.out, name, tab)
        figs[name] = f"{name}.png"
    return figs


def headline_text(h: dict) -> str:
    """The number to cite: :func:`elbo_lab.cite.citation_line`'s line when the stage recorded it (the formatter
    ``elbo-lab bound`` uses), else the same facts from the stage's fields."""
    if h.get("citation", {}).get("line"):
        return h["citation"]["line"]
    return (
        f"NLL ≤ {h['bits_per_dim']:.3f} ± {h['stderr']:.3f} bits/dim (± 1 s.e. over images), {h['estimator']}, "
        f"{h['images']} test images, {h['n_evals']:,} network evaluations"
        + (f", {h['model']}" if h.get("model") else "")
    )


def captions(r: dict, tabs: dict) -> dict[str, str]:
    """Figure captions; every stated fact is computed here from the figure's own table."""
    from .figures import gap_facts, gap_phrase, reduction_annotation
    from .reduction import mass_summary

    cap = {}
    if "training_curve" in tabs:
        c = tabs["training_curve"]
        cap["training_curve"] = (
            f"Training: the EMA model's held-out bound at {len(c['step'])} points ({c['estimator']}, "
            f"{c['n_evals_per_point']:,} network evaluations per point; band ± 2 s.e. of the estimator) and "
            "L_simple, held out and on the training batches; the VAE's test −IWAE and the per-pixel baseline for "
            "reference."
        )
        cap["bound_vs_loss"] = (
            f"L_simple (left axis) and the held-out bound in bits/dim (right axis; {c['estimator']}, band ± 2 s.e.) "
            f"on one training-step axis, {len(c['step'])} held-out points; the VAE's bound and the per-pixel "
            "baseline for reference."
        )
        t = tabs["bound_terms"]
        m = mass_summary(t)
        rng = m["ranges"][0]
        cap["bound_terms"] = (
            f"The trained DDPM's bound term by term over t on {t['images']} test images (bits/dim, log scale; band "
            f"± 2 s.e. over images); L_0 and L_T marked. Steps {rng['from']}–{rng['to']} hold "
            f"{rng['bits_per_dim']:.3f} of the {m['total']:.3f} bits/dim ({100 * rng['share']:.1f} %); half of "
            f"Σ_t L_(t−1) is reached by t = {m['t_50']}, 90 % by t = {m['t_90']}."
        )
        cap["per_step_mse"] = (
            f"The trained model's ε-MSE per step (top) and the bound's term (bottom) split into w_t·MSE with the "
            f"model's own σ_t² ({t['variance']}) and the variance constant; x-axis: every step t = 1..{len(t['t'])}."
        )
        red = tabs["reduction"]["rows"]
        cap["reduction"] = (
            "The guide's central claim, per step and cumulated over t (top: "
            + "; bottom: ".join(
                f"{name} — {reduction_annotation(tab)}"
                + (f"; exact NLL {tab['exact_nll']:.4f} bits/dim" if tab.get("exact_nll") is not None else "")
                for name, tab in red.items()
            )
            + ")."
        )
        cap["mc_convergence"] = (
            f"Monte Carlo convergence on {tabs['mc_convergence']['images']} test images: estimate ± 2 s.e. "
            "against network evaluations; the full estimator on the same images as reference. Only importance "
            "sampling's bars are honest intervals (dashed: uniform and stratified, whose nominal 95% intervals "
            "undercover, benchmarks/bench_bound.py part (c))."
        )
        f = tabs["forward_noising"]
        cap["forward_noising"] = (
            f"Forward noising of a real test digit at t = {', '.join(map(str, f['t']))}: ᾱ_t falls from "
            f"{f['alpha_bar'][0]:.4f} to {f['alpha_bar'][-1]:.2g}, SNR from {f['snr'][0]:.3g} to {f['snr'][-1]:.2g}."
        )
        cap["reverse_process"] = (
            f"Reverse process: {len(r['ddpm_eval']['reverse']['xt'])} sampling chains, x_t and the model's "
            f"x̂_0(x_t, t) at t = {', '.join(map(str, r['ddpm_eval']['reverse']['t']))}."
        )
    cap["eps_weights"] = "The weights w_t that turn the ε-MSE into the bound (E9), against L_simple's constant 1."
    og = tabs["oracle_gap"]
    phrases = [gap_phrase(name, gap_facts(og["Ts"], g)) for name, g in og["gaps"].items()]
    cap["oracle_gap"] = (
        f"Gaussian oracle (D = {og['dim']}): bound minus the model's exact NLL (bits/dim) against T, "
        f"T = {og['Ts'][0]}..{og['Ts'][-1]}. " + "; ".join(phrases) + "."
    )
    cap["vae_iwae"] = "VAE: −ELBO and −IWAE_k against k; the linear-Gaussian oracle's gap to log p(x)."
    cap["samples"] = "Samples from the DDPM and the VAE next to real test digits."
    return cap


FIGURE_ORDER = [
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
        rows.append(
            [
                f"DDPM bound ({h['estimator']}, {h['images']} images) — headline",
                f"{h['bits_per_dim']:.3f}",
                f"{h['stderr']:.3f}",
            ]
        )
        f = r["ddpm_eval"]["full"]
        rows.append(
            [
                f"DDPM bound, full (every step), first {f['images']} test images",
                f"{f['bits_per_dim']:.3f}",
                f"{f['stderr_images']:.3f}",
            ]
        )
    top.text(
        "Test-split negative-log-likelihood bounds in bits/dim (lower is better; a bound is ≥ the model's "
        "−log p(x)/(D ln 2)). ± 1 standard error over images."
    )
    top.table(["model", "bits/dim", "± 1 s.e."], rows)
    if "ddpm_eval" in r:
        h, f = r["ddpm_eval"]["headline"], r["ddpm_eval"]["full"]
        vae_iw = b["test"]["iwae"]["bits_per_dim"]
        top.text(f"The number to cite (DDPM): {headline_text(h)}.")
        if h.get("citation"):
            top.text(
                f"Its ± is the estimator's own noise for these {h['images']} images (1 s.e.); the table's ± "
                f"{h['stderr']:.3f} is the spread over the test images, the error of the mean as an estimate over "
                "the data distribution."
            )
        top.text(
            f"Why the other DDPM number differs: the full estimator's {f['bits_per_dim']:.3f} is the same bound of "
            f"the same model, evaluated exactly over t ({f['n_evals']:,} evaluations) but on only the first "
            f"{f['images']} of the {h['images']} test images, so its images differ and its ± "
            f"{f['stderr_images']:.3f} is over {f['images']} images; it feeds the per-step figures. The headline "
            "uses every test image."
        )
        verdict = "below" if h["bits_per_dim"] < vae_iw else "NOT below"
        line = (
            f"DDPM headline {h['bits_per_dim']:.3f} bits/dim is {verdict} the VAE's −IWAE "
            f"{vae_iw:.3f} (k = {b['test']['iwae']['k']})."
        )
        (top.text if h["bits_per_dim"] < vae_iw else top.alert)(line)
    summary = r.get("ddpm", {}).get("summary", {})
    top.text(
        f"Mode: {pipe.mode}; seed {pipe.seed}; DDPM budget {getattr(pipe, 'ddpm_budget', '-')} "
        f"({summary.get('step', '-')} steps trained); torch threads {getattr(pipe, 'threads', '-')}; "
        f"device {r.get('ddpm_eval', {}).get('device', 'cpu')}; stage times (s, wall clock, load-dependent): "
        + ", ".join(f"{k} {v:.0f}" for k, v in pipe.timings.items())
    )

    sec = rep.section("Checks")
    sec.table(
        ["claim", "expected", "observed", "tolerance", ""],
        [
            [f"{c['id']}: {c['statement']}", c["expected"], c["observed"], c["tolerance"], "✓" if c["passed"] else "✗"]
            for c in claims
        ],
    )

    if figs:
        caps = captions(r, figure_tables(pipe, r))
        sec = rep.section("Figures")
        sec.text("Every figure's numbers are in the JSON file of the same name beside it (with units).")
        i = 0
        for name in FIGURE_ORDER:
            if name in figs:
                i += 1
                sec.figure(figs[name], f"{i}. {caps[name]}")

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
    ddpm_minutes: float | None = None,
    log: Callable[[str], None] = print,
) -> int:
    """Run (or continue) the whole pipeline; returns 0 when every derivation and check passes, else 1.

    Torch's thread count is the caller's (``elbo-lab run --threads``; recorded in results.json)."""
    from .data import load_digits
    from .ddpm.model import resolve_device
    from .provenance import provenance

    resolve_device(device)  # `--device cuda` without a GPU: a one-line error before any work
    if ddpm_minutes is not None and not ddpm_minutes > 0:
        raise ElboLabError(f"--minutes must be > 0, got {ddpm_minutes}")
    t_start, c_start = time.perf_counter(), time.process_time()
    pipe = Pipeline(out, mode=mode, seed=seed, device=device, ddpm_minutes=ddpm_minutes, log=log)
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
    big = ("samples", "reverse", "forward", "per_step", "oracle_per_step")  # in the figures' tables instead
    h = r["ddpm_eval"]["headline"]
    results = {
        **provenance(r["ddpm_eval"].get("device")),
        "mode": mode,
        "seed": seed,
        "threads": pipe.threads,
        "budget": {**asdict(pipe.budget), "ddpm": pipe.ddpm_budget},
        "all_checks_pass": ok,
        "seconds": {**pipe.timings, "total_this_invocation": round(time.perf_counter() - t_start, 1)},
        "cpu_seconds": {**pipe.cpu_timings, "total_this_invocation": round(time.process_time() - c_start, 1)},
        "units": "bits/dim = nats / (D ln 2); model numbers are negative-log-likelihood bounds unless marked ELBO",
        "headline": {
            "text": headline_text(h),
            "bits_per_dim": h["bits_per_dim"],
            "stderr": h["stderr"],
            "what": "DDPM test NLL upper bound, bits/dim, ± 1 s.e. over images",
            "estimator": h["estimator"],
            "images": h["images"],
            "n_evals": h["n_evals"],
            "model": h.get("model"),
            "citation": h.get("citation"),
        },
        "derivations": [
            {k: d[k] for k in ("name", "equation", "ok", "seconds")} for d in r["derivations"]["derivations"]
        ],
        "checks": claims,
        "vae": {k: r["vae"]["metrics"][k] for k in ("bounds", "baselines", "best_epoch", "epochs_run", "parameters")},
        "vae_iwae_by_k": r["vae"]["iwae_by_k"],
        "ppca_oracle": r["vae"]["ppca_oracle"],
        "ddpm": {k: v for k, v in r["ddpm_eval"].items() if k not in big},
        "ddpm_training": r["ddpm"]["summary"],
        "oracle_gap": r["oracle_gap"]["rows"],
        "figures": {k: [v, v.replace(".png", ".svg"), v.replace(".png", ".json")] for k, v in figs.items()},
    }
    atomic_write_json(pipe.out / "results.json", _jsonable(results))
    log(f"report: {pipe.out / 'report.html'} (and report.md, results.json, figures as PNG + SVG)")
    if not ok:
        log("SOME CHECKS FAILED — see the top of the report")
    pipe.lock.release()
    return 0 if ok else 1

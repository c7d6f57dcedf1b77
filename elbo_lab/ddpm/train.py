"""Training a DDPM ε-model on real data: L_simple, L_vlb or hybrid; EMA; held-out bound; exact resume.

Losses, per image, for a step k drawn by the sampler with weight w = 1/(T p_k) (1 for uniform), bits/dim:

- ``simple``: w · ‖ε − ε̂‖²/D  (E10, :func:`elbo_lab.bound.simple_term`; improved-diffusion's ``mean_flat``).
- ``vlb``:    w · T · L_k / (D ln 2)  — an unbiased one-step estimate of Σ_k L_k (the bound without L_T, which has
  no parameters), with L_k the engine's :func:`elbo_lab.bound.bound_term` (E7 terms: closed-form KL for k ≥ 1,
  discretized decoder at k = 0).  Default sampler: importance (improved DDPM's loss-aware sampler), so the
  gradient variance is bearable.
- ``hybrid``: w · (‖ε − ε̂‖²/D + λ · T · L_k/(D ln 2)) with ε̂ *detached* inside L_k, so the vlb part trains only
  the variance output v (improved DDPM, λ = 0.001; equal to their ``RESCALED_MSE`` loss).  With a fixed
  variance the vlb part has no gradient and hybrid = simple.

One network evaluation per training image: the model is called once inside ``bound_term`` and its ε̂ is
captured for the simple term.  Every run logs to ``DIR/metrics.json``: L_simple and the importance-weighted
bound on the training batches (every ``log_every`` steps), and every ``eval_every`` steps the full bound of
the EMA model on a held-out split of the training data (the engine's stratified estimator, a fixed seed so
successive evaluations share their random numbers), in bits/dim with its standard error.  ``best.pt`` keeps
the EMA weights with the lowest held-out bound (digits overfits: DESIGN.md).

Randomness: a CPU generator (data order, steps), a device generator (noise), and the global RNG forked for
dropout -- all seeded from ``seed`` and saved in every checkpoint, so a run of N steps equals N/2 steps plus a
resume to N, bit for bit on the CPU (test: ``tests/test_ddpm.py``).  The caller's global RNG is untouched.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch

from ..bound import bound_term, prior_term, simple_term, variational_bound
from ..data import Dataset, load_data
from ..errors import CheckpointError, DataError, ElboLabError
from ..io import atomic_write_json
from .checkpoint import load_checkpoint, save_checkpoint, schedule_from_config
from .model import EMA, EpsModel, build_eps_model, device_description, make_net_config, resolve_device
from .sampler import make_sampler

__all__ = ["TrainConfig", "train", "split_validation"]

LOSSES = ("simple", "vlb", "hybrid")
VARIANCES = ("posterior", "beta", "learned")


@dataclass
class TrainConfig:
    """Everything that defines a run (stored in checkpoints as a plain dict).  Defaults: the configuration
    chosen by ``experiments/ablation_ddpm.py`` (see its table)."""

    data: str = "digits"
    levels: int | None = None
    loss: str = "hybrid"
    variance: str = "learned"
    param: str = "categorical"  # "eps" | "categorical" (see elbo_lab.ddpm.model)
    schedule: str = "cosine"
    T: int = 1000
    beta_start: float = 1e-4  # linear schedule end points (scaled by 1000/T)
    beta_end: float = 0.02
    cosine_s: float = 0.008
    steps: int | None = None
    minutes: float | None = None
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    hybrid_lambda: float = 0.001
    sampler: str = "auto"  # auto: importance for vlb, uniform otherwise
    sampler_mix: float = 0.05
    base_channels: int = 32
    num_res_blocks: int = 1
    dropout: float = 0.1
    attention: bool = True
    val_fraction: float = 0.1
    val_samples: int = 16  # steps per held-out image for the stratified estimator
    eval_every: int = 250
    log_every: int = 25
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # bf16 autocast for the network on CUDA

    def validate(self) -> None:
        if self.loss not in LOSSES:
            raise ElboLabError(f"unknown loss {self.loss!r} (expected one of {', '.join(LOSSES)})")
        if self.variance not in VARIANCES:
            raise ElboLabError(f"unknown variance {self.variance!r} (expected one of {', '.join(VARIANCES)})")
        if self.param not in ("eps", "categorical"):
            raise ElboLabError(f"unknown parameterization {self.param!r} (expected eps or categorical)")
        if self.schedule not in ("linear", "cosine"):
            raise ElboLabError(f"unknown schedule {self.schedule!r} (expected linear or cosine)")
        if self.sampler not in ("auto", "uniform", "importance"):
            raise ElboLabError(f"unknown sampler {self.sampler!r} (expected auto, uniform or importance)")
        if self.T < 2:
            raise ElboLabError(f"--T must be >= 2, got {self.T}")
        if (self.steps is None) == (self.minutes is None):
            raise ElboLabError("give exactly one training budget: --steps N or --minutes M")
        if self.steps is not None and self.steps < 1:
            raise ElboLabError(f"--steps must be >= 1, got {self.steps}")
        if self.minutes is not None and not self.minutes > 0:
            raise ElboLabError(f"--minutes must be > 0, got {self.minutes}")
        for name in ("batch_size", "eval_every", "log_every", "base_channels", "num_res_blocks"):
            if getattr(self, name) < 1:
                raise ElboLabError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.val_samples < 2 or self.val_samples % 2:
            raise ElboLabError(f"val_samples must be even and >= 2, got {self.val_samples}")
        if not 0 < self.val_fraction < 1:
            raise ElboLabError(f"val_fraction must lie in (0, 1), got {self.val_fraction}")

    @property
    def sampler_kind(self) -> str:
        if self.sampler != "auto":
            return self.sampler
        return "importance" if self.loss == "vlb" else "uniform"

    def model_keys(self) -> dict:
        """The fields that define the model and its training objective (must match on resume)."""
        keep = (
            "data",
            "levels",
            "loss",
            "variance",
            "param",
            "schedule",
            "T",
            "beta_start",
            "beta_end",
            "cosine_s",
            "batch_size",
            "lr",
            "weight_decay",
            "grad_clip",
            "ema_decay",
            "hybrid_lambda",
            "sampler",
            "sampler_mix",
            "base_channels",
            "num_res_blocks",
            "dropout",
            "attention",
            "val_fraction",
            "val_samples",
            "eval_every",
            "seed",
        )
        return {k: getattr(self, k) for k in keep}

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def split_validation(train: torch.Tensor, fraction: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(fit, held-out) split of the training examples with a fixed seeded permutation (the test split is never
    touched during training)."""
    n = train.shape[0]
    n_val = max(2, int(round(n * fraction)))
    if n - n_val < 2:
        raise DataError(f"too few training examples ({n}) to hold out a validation split")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return train[perm[n_val:].sort().values], train[perm[:n_val].sort().values]


class _Capture:
    """Wraps the ε-model for ``bound_term``: remembers ε̂ (with its graph) for the simple term and returns
    ε̂ detached when the vlb part must not train the mean (hybrid), everything detached for the simple loss."""

    def __init__(self, model: EpsModel, mode: str):
        self.model, self.mode, self.eps = model, mode, None

    def __call__(self, xt: torch.Tensor, k: torch.Tensor):
        out = self.model(xt, k)
        eps, v = out if isinstance(out, tuple) else (out, None)
        self.eps = eps
        if self.mode == "simple":
            eps, v = eps.detach(), (v.detach() if v is not None else None)
        elif self.mode == "hybrid":
            eps = eps.detach()
        return (eps, v) if v is not None else eps


def _check_data(ds: Dataset) -> None:
    if ds.is_image:
        c, h, w = ds.shape
        if c > 4 or not 4 <= h <= 64:
            raise DataError(f"{ds.name}: images of shape {ds.shape} are not supported (C <= 4, 4 <= side <= 64)")
    elif len(ds.shape) != 1:
        raise DataError(f"{ds.name}: examples of shape {ds.shape}; expected (C, H, W) images or (D,) vectors")


def evaluate(model: EpsModel, schedule, x: torch.Tensor, cfg: TrainConfig, levels: int, *, seed: int) -> dict:
    """Held-out bound (bits/dim, NLL bound ≥ −log p) of ``model`` on ``x`` with the stratified estimator."""
    res = variational_bound(
        model,
        schedule,
        x,
        estimator="stratified",
        num_samples=cfg.val_samples,
        variance=cfg.variance,
        decoder="discretized",
        levels=levels,
        generator=seed,
        model_dtype=torch.float64,
        bits_per_dim=True,
    )
    return {
        "bpd": res.mean(),
        "stderr_images": res.mean_stderr("images"),
        "stderr_estimator": res.mean_stderr("estimator"),
        "n_evals": res.n_evals,
    }


def train(cfg: TrainConfig, out_dir: str | Path, *, resume: bool = False, progress: bool = True, log=print) -> dict:
    """Train (or resume) a DDPM; returns the run summary (also in ``DIR/metrics.json``)."""
    cfg.validate()
    out = Path(out_dir)
    device = resolve_device(cfg.device)
    dev_name = device_description(device)
    ds = load_data(cfg.data, levels=cfg.levels)
    _check_data(ds)
    fit, held = split_validation(ds.train, cfg.val_fraction)
    fit, held = fit.to(device), held.to(device, torch.float64)
    schedule = schedule_from_config(asdict(cfg)).to(device)
    learned = cfg.variance == "learned"
    net_cfg = make_net_config(
        ds.shape,
        T=cfg.T,
        learned_variance=learned,
        out_per_channel=ds.levels if cfg.param == "categorical" else 1,
        base_channels=cfg.base_channels,
        num_res_blocks=cfg.num_res_blocks,
        dropout=cfg.dropout,
        attention=cfg.attention,
    )
    amp = cfg.amp and device.type == "cuda"
    model = build_eps_model(net_cfg, schedule, param=cfg.param, levels=ds.levels, device=device, amp=amp, seed=cfg.seed)
    ema = EMA(model.net, cfg.ema_decay)
    ema_model = EpsModel(ema.net, schedule, param=cfg.param, levels=ds.levels, amp=amp)
    opt = torch.optim.AdamW(model.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sampler = make_sampler(cfg.sampler_kind, cfg.T, mix=cfg.sampler_mix)
    g_cpu = torch.Generator().manual_seed(cfg.seed)  # data order, timesteps
    g_dev = torch.Generator(device=device).manual_seed(cfg.seed + 1)  # noise
    data_info = {
        "name": ds.name,
        "spec": cfg.data,
        "shape": list(ds.shape),
        "levels": ds.levels,
        "n_fit": int(fit.shape[0]),
        "n_heldout": int(held.shape[0]),
        "n_test": int(ds.test.shape[0]),
    }
    n_params = sum(p.numel() for p in model.net.parameters())

    step, elapsed, history, best = 0, 0.0, [], None
    perm, pos = torch.randperm(fit.shape[0], generator=g_cpu), 0
    dropout_rng = torch.Generator().manual_seed(cfg.seed + 2).get_state()  # state of the forked global RNG
    cuda_rng = None
    if resume:
        ckpt = load_checkpoint(out / "last.pt")
        old = TrainConfig.from_dict(ckpt["config"]).model_keys()
        diff = [k for k, v in cfg.model_keys().items() if old.get(k) != v]
        if diff:
            raise CheckpointError(
                f"{out / 'last.pt'}: cannot resume, the run was made with different {diff[0]}="
                f"{old.get(diff[0])!r} (now {getattr(cfg, diff[0])!r})"
            )
        try:
            model.net.load_state_dict(ckpt["model"])
            ema.net.load_state_dict(ckpt["ema"])
            opt.load_state_dict(ckpt["optimizer"])
            sampler.load_state_dict(ckpt["sampler"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise CheckpointError(f"{out / 'last.pt'}: incompatible checkpoint ({str(exc).splitlines()[0]})") from None
        step, elapsed, history, best = ckpt["step"], ckpt["elapsed"], ckpt["history"], ckpt["best"]
        g_cpu.set_state(ckpt["rng"]["cpu"])
        g_dev.set_state(ckpt["rng"]["device"].to(g_dev.get_state().device))
        dropout_rng = ckpt["rng"]["dropout"]
        cuda_rng = ckpt["rng"].get("cuda_dropout")
        perm, pos = ckpt["perm"], ckpt["pos"]
        log(f"resumed {out / 'last.pt'} at step {step}")

    header = {
        "device": dev_name,
        "config": asdict(cfg),
        "net_config": net_cfg,
        "data": data_info,
        "n_params": n_params,
        "schedule": schedule.name,
    }

    def snapshot() -> dict:
        rng = {"cpu": g_cpu.get_state(), "device": g_dev.get_state().cpu(), "dropout": torch.get_rng_state()}
        if device.type == "cuda":
            rng["cuda_dropout"] = torch.cuda.get_rng_state(device)
        return {
            "config": asdict(cfg),
            "net_config": net_cfg,
            "data": data_info,
            "device": dev_name,
            "model": model.net.state_dict(),
            "ema": ema.net.state_dict(),
            "optimizer": opt.state_dict(),
            "sampler": sampler.state_dict(),
            "step": step,
            "elapsed": elapsed,
            "rng": rng,
            "perm": perm,
            "pos": pos,
            "history": history,
            "best": best,
        }

    def write_metrics() -> dict:
        summary = {**header, "step": step, "elapsed_s": round(elapsed, 2), "best": best, "history": history}
        atomic_write_json(out / "metrics.json", summary)
        return summary

    out.mkdir(parents=True, exist_ok=True)
    D = math.prod(ds.shape)
    bpd = 1.0 / (D * math.log(2.0))
    mode = cfg.loss
    acc = {"simple": 0.0, "bound": 0.0, "loss": 0.0, "n": 0}
    budget_s = cfg.minutes * 60.0 if cfg.minutes is not None else None
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(
            total=cfg.steps if cfg.steps else int(budget_s),
            initial=step if cfg.steps else int(elapsed),
            unit="step" if cfg.steps else "s",
            dynamic_ncols=True,
            leave=False,
        )

    def done() -> bool:
        return step >= cfg.steps if cfg.steps is not None else elapsed >= budget_s

    def eval_and_save() -> None:
        nonlocal best
        ev = evaluate(ema_model, schedule, held, cfg, ds.levels, seed=cfg.seed + 1000)
        rec = {
            "step": step,
            "elapsed_s": round(elapsed, 2),
            "heldout_bpd": ev["bpd"],
            "heldout_stderr": ev["stderr_estimator"],
            "heldout_stderr_images": ev["stderr_images"],
        }
        history.append(rec)
        if best is None or ev["bpd"] < best["heldout_bpd"]:
            best = {"step": step, "heldout_bpd": ev["bpd"], "heldout_stderr": ev["stderr_estimator"]}
            save_checkpoint(
                out / "best.pt",
                {
                    "config": asdict(cfg),
                    "net_config": net_cfg,
                    "data": data_info,
                    "device": dev_name,
                    "ema": ema.net.state_dict(),
                    "step": step,
                    "heldout_bpd": ev["bpd"],
                    "history": history,
                },
            )
        save_checkpoint(out / "last.pt", snapshot())
        write_metrics()
        msg = f"step {step:6d}  {elapsed:7.1f}s  held-out bound {ev['bpd']:.4f} ± {ev['stderr_estimator']:.4f} bits/dim"
        if bar is not None:
            bar.write(msg)
        else:
            log(msg)

    fork_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices):
        torch.set_rng_state(dropout_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state(cuda_rng, device)
        elif device.type == "cuda":
            torch.cuda.manual_seed(cfg.seed + 3)
        model.train()
        t_last = time.perf_counter()
        if step == 0 and not history:
            eval_and_save()
        while not done():
            if pos + cfg.batch_size > perm.shape[0]:
                perm, pos = torch.randperm(fit.shape[0], generator=g_cpu), 0
            idx = perm[pos : pos + cfg.batch_size]
            pos += cfg.batch_size
            x0 = fit[idx.to(device)]  # (B, *shape)
            k, w = sampler.sample(x0.shape[0], g_cpu)  # (B,), (B,) w = 1/(T p_k)
            k, w = k.to(device), w.to(device)
            noise = torch.randn(x0.shape, generator=g_dev, dtype=torch.float64, device=device)  # (B, *shape)
            cap = _Capture(model, mode)
            L_k = bound_term(
                cap,
                schedule,
                x0,
                k,
                noise,
                variance=cfg.variance,
                decoder="discretized",
                levels=ds.levels,
                model_dtype=torch.float32,
            )  # (B,) nats
            simple = simple_term(noise, cap.eps)  # (B,) ‖ε − ε̂‖²/D
            if mode == "simple":
                per = w * simple
            elif mode == "vlb":
                per = w * cfg.T * L_k * bpd
            else:
                per = w * (simple + cfg.hybrid_lambda * cfg.T * L_k * bpd)
            loss = per.mean()
            if not torch.isfinite(loss):
                raise ElboLabError(f"training diverged at step {step}: loss is {loss.item()} (try a lower --lr)")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.net.parameters(), cfg.grad_clip)
            opt.step()
            ema.update(model.net, step)
            sampler.update(k, L_k)
            step += 1
            now = time.perf_counter()
            elapsed += now - t_last
            t_last = now
            acc["simple"] += float(simple.detach().mean())
            acc["bound"] += float((w * cfg.T * L_k.detach()).mean() * bpd + prior_term(schedule, x0).mean() * bpd)
            acc["loss"] += float(loss.detach())
            acc["n"] += 1
            if bar is not None:
                bar.update(1 if cfg.steps else int(elapsed) - bar.n)
            if step % cfg.log_every == 0:
                n = acc["n"]
                history.append(
                    {
                        "step": step,
                        "elapsed_s": round(elapsed, 2),
                        "train_simple": acc["simple"] / n,
                        "train_bound_bpd": acc["bound"] / n,
                        "train_loss": acc["loss"] / n,
                    }
                )
                if bar is not None:
                    bar.set_postfix(simple=f"{acc['simple'] / n:.4f}", bound=f"{acc['bound'] / n:.3f}")
                acc = {"simple": 0.0, "bound": 0.0, "loss": 0.0, "n": 0}
            if step % cfg.eval_every == 0 or done():
                eval_and_save()
                now = time.perf_counter()
                elapsed += now - t_last  # the budget counts evaluation time too (wall clock)
                t_last = now
    if bar is not None:
        bar.close()
    return write_metrics()

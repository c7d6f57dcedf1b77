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
the EMA model on a held-out split of the training data (the engine's importance estimator with its pilot
proposal -- the one sampled estimator whose 95% interval was measured to cover, benchmarks/bench_bound.py part
(c) -- and a fixed seed: evaluations share their ε at the same (image, step), but the steps drawn follow each
checkpoint's proposal, so compare checkpoints within their standard errors), in bits/dim with its standard error.
``best.pt`` keeps the EMA weights with the lowest held-out bound (digits overfits: DESIGN.md).

Randomness: a CPU generator (data order, steps), a device generator (noise), and the global RNG forked for
dropout -- all seeded from ``seed`` and saved in every checkpoint, so a run of N steps equals N/2 steps plus a
resume to N, bit for bit on the CPU (test: ``tests/test_ddpm.py``).  The caller's global RNG is untouched.

Several processes (``torchrun``, :mod:`elbo_lab.distributed`): every rank draws the same global minibatch, steps
and noise from the same generators and computes the loss of its own contiguous slice of ``batch_size / world``
images; DistributedDataParallel averages the gradients, so each optimizer step is that of the global batch and
every rank holds the same weights (checked at the end: SHA-256 per rank in ``metrics.json``).  The importance
sampler is updated with the losses of the whole batch (gathered).  Rank 0 alone evaluates, writes checkpoints
(atomically) and logs.  Dropout draws one stream per rank from the same seed (so resume stays exact).
Test: ``tests/test_distributed.py``.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch

from ..bound import bound_term, l_simple, prior_term, simple_term, variational_bound
from ..data import Dataset, load_data
from ..distributed import Dist, weights_digest
from ..errors import CheckpointError, DataError, ElboLabError, OptionError
from ..io import atomic_write_json, claim_output_dir
from ..options import check
from .checkpoint import load_checkpoint, save_checkpoint, schedule_from_config
from .model import EMA, EpsModel, build_eps_model, device_description, make_net_config, resolve_device
from .sampler import make_sampler

__all__ = ["TrainConfig", "Trainer", "split_validation", "train"]

LOSSES = ("simple", "vlb", "hybrid")
# TrainConfig fields with a documented range in elbo_lab.options.RANGES
_RANGE_CHECKED = (
    "levels", "T", "beta_start", "beta_end", "cosine_s", "steps", "minutes", "batch_size", "lr", "weight_decay",
    "grad_clip", "ema_decay", "hybrid_lambda", "sampler_mix", "base_channels", "num_res_blocks", "dropout",
    "val_fraction", "val_samples", "eval_every", "log_every", "seed",
)  # fmt: skip
SIMPLE_REPEATS = 4  # uniform steps per held-out image for the held-out L_simple of each evaluation
HELDOUT_ESTIMATOR = "importance"  # the held-out curve's bound estimator (pilot proposal); val_samples steps/image
VARIANCES = ("posterior", "beta", "learned")


@dataclass
class TrainConfig:
    """Everything that defines a run (stored in checkpoints as a plain dict).  Defaults: the configuration
    chosen by ``experiments/ablation_ddpm.py`` (table in ``docs/ddpm.md``)."""

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
    val_samples: int = 16  # steps per held-out image for the held-out (importance) estimator
    eval_every: int = 250
    eval_at_start: bool = True  # a held-out point at step 0 (the untrained model) on the curve
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
        if (self.steps is None) == (self.minutes is None):
            raise ElboLabError("give exactly one training budget: --steps N or --minutes M")
        # every numeric field against its documented range (elbo_lab.options: the CLI checks the same table)
        for name in _RANGE_CHECKED:
            value = getattr(self, name)
            if value is not None or name not in ("steps", "minutes", "levels"):
                check(name, value)
        if not self.beta_start < self.beta_end:
            raise OptionError(f"--beta-start ({self.beta_start:g}) must be below --beta-end ({self.beta_end:g})")
        if self.schedule == "linear" and self.beta_end * 1000 / self.T >= 1:
            raise OptionError(
                f"the linear schedule scales β by 1000/T: --beta-end {self.beta_end:g} at T = {self.T} gives "
                f"β_T = {self.beta_end * 1000 / self.T:g} >= 1; use a larger --T or a smaller --beta-end"
            )

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
    """Held-out bound (bits/dim, NLL bound ≥ −log p) of ``model`` on ``x`` with the importance estimator (its
    proposal from a pilot on the first 4 held-out images, counted in ``n_evals``)."""
    res = variational_bound(
        model,
        schedule,
        x,
        estimator=HELDOUT_ESTIMATOR,
        num_samples=cfg.val_samples,
        variance=cfg.variance,
        decoder="discretized",
        levels=levels,
        generator=seed,
        model_dtype=torch.float64,
        bits_per_dim=True,
    )
    # held-out L_simple (E10) at SIMPLE_REPEATS uniform steps per image, its own fixed seed
    with torch.no_grad():
        simple = l_simple(
            model,
            schedule,
            x.repeat(SIMPLE_REPEATS, *([1] * (x.ndim - 1))),
            generator=seed + 1,
            model_dtype=torch.float64,
        )
    return {
        "bpd": res.mean(),
        "stderr_images": res.mean_stderr("images"),
        "stderr_estimator": res.mean_stderr("estimator"),
        "n_evals": res.n_evals,
        "simple": float(simple.mean()),
        "simple_stderr": float(simple.std() / math.sqrt(simple.numel())),
    }


class Trainer:
    """The state of one run (model, EMA, optimizer, sampler, generators, data order, history) and its operations:
    :meth:`step` (one optimizer step), :meth:`evaluate_and_save`, :meth:`run` (the loop with its budget).

    The dropout randomness comes from the global RNG inside :meth:`rng_scope` (forked: the caller's global RNG is
    untouched), whose state is kept here and saved in checkpoints.
    """

    def __init__(self, cfg: TrainConfig, out_dir: str | Path, *, resume: bool = False, log=print, dist=None):
        cfg.validate()
        self.cfg, self.out, self.log = cfg, Path(out_dir), log
        self.dist = dist = dist or Dist()
        if dist.enabled and cfg.batch_size % dist.world:
            raise ElboLabError(f"--batch-size {cfg.batch_size} must be a multiple of the {dist.world} processes")
        self.device = device = resolve_device(dist.device if dist.enabled else cfg.device)
        self.device_name = device_description(device)
        ds = load_data(cfg.data, levels=cfg.levels)
        _check_data(ds)
        self.levels = ds.levels
        fit, held = split_validation(ds.train, cfg.val_fraction)
        self.fit, self.held = fit.to(device), held.to(device, torch.float64)
        self.schedule = schedule = schedule_from_config(asdict(cfg)).to(device)
        self.net_cfg = make_net_config(
            ds.shape,
            T=cfg.T,
            learned_variance=cfg.variance == "learned",
            out_per_channel=ds.levels if cfg.param == "categorical" else 1,
            base_channels=cfg.base_channels,
            num_res_blocks=cfg.num_res_blocks,
            dropout=cfg.dropout,
            attention=cfg.attention,
        )
        amp = cfg.amp and device.type == "cuda"
        self.model = build_eps_model(
            self.net_cfg, schedule, param=cfg.param, levels=ds.levels, device=device, amp=amp, seed=cfg.seed
        )
        self._ddp_model = None  # with several processes: the same network wrapped in DDP (see train_model)
        if dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ddp = DDP(
                self.model.net,
                device_ids=[device] if device.type == "cuda" else None,
                find_unused_parameters=cfg.loss == "simple" and cfg.variance == "learned",  # v gets no gradient
            )
            self._ddp_model = EpsModel(ddp, schedule, param=cfg.param, levels=ds.levels, amp=amp)
        self.ema = EMA(self.model.net, cfg.ema_decay)
        self.ema_model = EpsModel(self.ema.net, schedule, param=cfg.param, levels=ds.levels, amp=amp)
        self.opt = torch.optim.AdamW(self.model.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.sampler = make_sampler(cfg.sampler_kind, cfg.T, mix=cfg.sampler_mix)
        self.g_cpu = torch.Generator().manual_seed(cfg.seed)  # data order, timesteps
        self.g_dev = torch.Generator(device=device).manual_seed(cfg.seed + 1)  # noise
        self.data_info = {
            "name": ds.name,
            "spec": cfg.data,
            "shape": list(ds.shape),
            "levels": ds.levels,
            "n_fit": int(self.fit.shape[0]),
            "n_heldout": int(self.held.shape[0]),
            "n_test": int(ds.test.shape[0]),
        }
        self.n_params = sum(p.numel() for p in self.model.net.parameters())
        self.bpd = 1.0 / (math.prod(ds.shape) * math.log(2.0))  # nats → bits/dim
        self.step_count, self.elapsed, self.history, self.best = 0, 0.0, [], None
        self.perm, self.pos = torch.randperm(self.fit.shape[0], generator=self.g_cpu), 0
        self.dropout_rng = torch.Generator().manual_seed(cfg.seed + 2).get_state()  # the forked global RNG
        self.cuda_rng = None
        self._in_scope = False
        self._acc = {"simple": 0.0, "bound": 0.0, "loss": 0.0, "n": 0}
        if resume:
            self._restore(load_checkpoint(self.out / "last.pt"))

    @property
    def train_model(self):
        """What :meth:`step` calls: ``model``, or with several processes its network wrapped in DDP."""
        return self.model if self._ddp_model is None else self._ddp_model

    def _restore(self, ckpt: dict) -> None:
        path = self.out / "last.pt"
        old = TrainConfig.from_dict(ckpt["config"]).model_keys()
        diff = [k for k, v in self.cfg.model_keys().items() if old.get(k) != v]
        if diff:
            raise CheckpointError(
                f"{path}: cannot resume, the run was made with different {diff[0]}="
                f"{old.get(diff[0])!r} (now {getattr(self.cfg, diff[0])!r})"
            )
        try:
            self.model.net.load_state_dict(ckpt["model"])
            self.ema.net.load_state_dict(ckpt["ema"])
            self.opt.load_state_dict(ckpt["optimizer"])
            self.sampler.load_state_dict(ckpt["sampler"])
            self.step_count, self.elapsed = ckpt["step"], ckpt["elapsed"]
            self.history, self.best = ckpt["history"], ckpt["best"]
            self.g_cpu.set_state(ckpt["rng"]["cpu"])
            self.g_dev.set_state(ckpt["rng"]["device"].to(self.g_dev.get_state().device))
            self.dropout_rng = ckpt["rng"]["dropout"]
            self.cuda_rng = ckpt["rng"].get("cuda_dropout")
            self.perm, self.pos = ckpt["perm"], ckpt["pos"]
            self._acc = dict(ckpt.get("log_acc", self._acc))  # the running means of the next log record
        except (KeyError, RuntimeError, ValueError) as exc:
            raise CheckpointError(f"{path}: incompatible checkpoint ({str(exc).splitlines()[0]})") from None
        self.log(f"resumed {path} at step {self.step_count}")

    @contextmanager
    def rng_scope(self):
        """Fork the global RNG, load the run's dropout stream into it, and keep its state on exit."""
        cuda = self.device.type == "cuda"
        with torch.random.fork_rng(devices=[self.device] if cuda else []):
            torch.set_rng_state(self.dropout_rng)
            if cuda:
                if self.cuda_rng is not None:
                    torch.cuda.set_rng_state(self.cuda_rng, self.device)
                else:
                    torch.cuda.manual_seed(self.cfg.seed + 3)
            self._in_scope = True
            try:
                yield
            finally:
                self._in_scope = False
                self._sync_rng()

    def step(self) -> torch.Tensor:
        """One optimizer step on the next minibatch; returns the (detached) loss."""
        cfg, model = self.cfg, self.model
        if self.pos + cfg.batch_size > self.perm.shape[0]:
            self.perm, self.pos = torch.randperm(self.fit.shape[0], generator=self.g_cpu), 0
        idx = self.perm[self.pos : self.pos + cfg.batch_size]
        self.pos += cfg.batch_size
        x0 = self.fit[idx.to(self.device)]  # (B, *shape)
        k, w = self.sampler.sample(x0.shape[0], self.g_cpu)  # (B,), (B,) w = 1/(T p_k)
        k, w = k.to(self.device), w.to(self.device)
        noise = torch.randn(x0.shape, generator=self.g_dev, dtype=torch.float64, device=self.device)  # (B, *shape)
        k_all = k
        if self.dist.enabled:  # this rank's slice of the global batch (every rank drew the same batch)
            b = x0.shape[0] // self.dist.world
            sl = slice(self.dist.rank * b, (self.dist.rank + 1) * b)
            x0, k, w, noise = x0[sl], k[sl], w[sl], noise[sl]
        cap = _Capture(self.train_model, cfg.loss)
        L_k = bound_term(
            cap,
            self.schedule,
            x0,
            k,
            noise,
            variance=cfg.variance,
            decoder="discretized",
            levels=self.levels,
            model_dtype=torch.float32,
        )  # (B,) nats, E7 term at each image's k
        simple = simple_term(noise, cap.eps)  # (B,) ‖ε − ε̂‖²/D  (E10)
        if cfg.loss == "simple":
            per = w * simple
        elif cfg.loss == "vlb":
            per = w * cfg.T * L_k * self.bpd
        else:
            per = w * (simple + cfg.hybrid_lambda * cfg.T * L_k * self.bpd)
        loss = per.mean()
        if not torch.isfinite(self._mean_over_ranks(loss.detach())):  # every rank stops together
            raise ElboLabError(f"training diverged at step {self.step_count}: loss is {loss.item()} (try a lower --lr)")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.net.parameters(), cfg.grad_clip)
        self.opt.step()
        self.ema.update(model.net, self.step_count)
        L_k = L_k.detach()
        self.sampler.update(k_all, self._gather_batch(L_k))
        self.step_count += 1
        a = self._acc  # running means for the log (one device sync per step)
        stats = torch.stack([simple.detach().mean(), (w * cfg.T * L_k).mean() * self.bpd, loss.detach()])
        stats = self._mean_over_ranks(stats).tolist()
        a["simple"], a["bound"], a["loss"], a["n"] = (
            a["simple"] + stats[0],
            a["bound"] + stats[1],
            a["loss"] + stats[2],
            a["n"] + 1,
        )
        if self.step_count % cfg.log_every == 0:
            self._log_train()
        return loss.detach()

    def _mean_over_ranks(self, t: torch.Tensor) -> torch.Tensor:
        """The mean of ``t`` over ranks (every rank's slice has the same size); ``t`` in one process."""
        if not self.dist.enabled:
            return t
        import torch.distributed as tdist

        t = t.clone()
        tdist.all_reduce(t)
        return t / self.dist.world

    def _gather_batch(self, t: torch.Tensor) -> torch.Tensor:
        """The (B,) values of the whole global batch, in batch order, from every rank's (B/world,) slice."""
        if not self.dist.enabled:
            return t
        import torch.distributed as tdist

        parts = [torch.empty_like(t) for _ in range(self.dist.world)]
        tdist.all_gather(parts, t.contiguous())
        return torch.cat(parts)

    def _log_train(self) -> None:
        a, n = self._acc, max(self._acc["n"], 1)
        # the training-batch bound adds L_T (no parameters) once per record
        prior = float(prior_term(self.schedule, self.fit[:256].to(torch.float64)).mean()) * self.bpd
        self.history.append(
            {
                "step": self.step_count,
                "elapsed_s": round(self.elapsed, 2),
                "train_simple": a["simple"] / n,
                "train_bound_bpd": a["bound"] / n + prior,
                "train_loss": a["loss"] / n,
            }
        )
        self._acc = {"simple": 0.0, "bound": 0.0, "loss": 0.0, "n": 0}

    def _sync_rng(self) -> None:
        """Copy the (forked) global RNG states into the run's state."""
        self.dropout_rng = torch.get_rng_state()
        if self.device.type == "cuda":
            self.cuda_rng = torch.cuda.get_rng_state(self.device)

    def snapshot(self) -> dict:
        if self._in_scope:
            self._sync_rng()
        rng = {"cpu": self.g_cpu.get_state(), "device": self.g_dev.get_state().cpu(), "dropout": self.dropout_rng}
        if self.cuda_rng is not None:
            rng["cuda_dropout"] = self.cuda_rng
        return {
            **self._header_ckpt(),
            "model": self.model.net.state_dict(),
            "ema": self.ema.net.state_dict(),
            "optimizer": self.opt.state_dict(),
            "sampler": self.sampler.state_dict(),
            "step": self.step_count,
            "elapsed": self.elapsed,
            "rng": rng,
            "perm": self.perm,
            "pos": self.pos,
            "history": self.history,
            "best": self.best,
            "log_acc": dict(self._acc),
        }

    def _header_ckpt(self) -> dict:
        return {
            "config": asdict(self.cfg),
            "net_config": self.net_cfg,
            "data": self.data_info,
            "device": self.device_name,
        }

    def summary(self) -> dict:
        return {
            "device": self.device_name,
            "config": asdict(self.cfg),
            "net_config": self.net_cfg,
            "data": self.data_info,
            "n_params": self.n_params,
            "schedule": self.schedule.name,
            "step": self.step_count,
            "elapsed_s": round(self.elapsed, 2),
            "best": self.best,
            "history": self.history,
        }

    def evaluate_and_save(self) -> dict | None:
        """Held-out bound of the EMA model; ``best.pt`` if it improved; ``last.pt``; ``metrics.json`` (rank 0 only:
        other ranks return None)."""
        if not self.dist.is_main:
            return None
        ev = evaluate(self.ema_model, self.schedule, self.held, self.cfg, self.levels, seed=self.cfg.seed + 1000)
        how = f"{HELDOUT_ESTIMATOR}, {self.cfg.val_samples} steps/image, {self.held.shape[0]} images"
        rec = {
            "step": self.step_count,
            "elapsed_s": round(self.elapsed, 2),
            "heldout_bpd": ev["bpd"],
            "heldout_stderr": ev["stderr_estimator"],
            "heldout_stderr_images": ev["stderr_images"],
            "heldout_estimator": how,
            "heldout_n_evals": ev["n_evals"],
            "heldout_simple": ev["simple"],
            "heldout_simple_stderr": ev["simple_stderr"],
        }
        self.history.append(rec)
        if self.best is None or ev["bpd"] < self.best["heldout_bpd"]:
            self.best = {"step": self.step_count, "heldout_bpd": ev["bpd"], "heldout_stderr": ev["stderr_estimator"]}
            best_ckpt = {
                **self._header_ckpt(),
                "ema": self.ema.net.state_dict(),
                "step": self.step_count,
                "heldout_bpd": ev["bpd"],
                "history": self.history,
            }
            save_checkpoint(self.out / "best.pt", best_ckpt)
        save_checkpoint(self.out / "last.pt", self.snapshot())
        atomic_write_json(self.out / "metrics.json", self.summary())
        return rec

    def run(self, *, progress: bool = True) -> dict:
        """Train until the budget (``steps`` or wall-clock ``minutes``, evaluations included) is spent."""
        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        budget_s = cfg.minutes * 60.0 if cfg.minutes is not None else None
        bar = None
        if progress and self.dist.is_main:
            from tqdm import tqdm

            bar = tqdm(
                total=cfg.steps if cfg.steps else int(budget_s),
                initial=self.step_count if cfg.steps else int(self.elapsed),
                unit="step" if cfg.steps else "s",
                dynamic_ncols=True,
                leave=False,
            )

        def done() -> bool:
            if cfg.steps is not None:
                return self.step_count >= cfg.steps
            return self.dist.broadcast(self.elapsed >= budget_s)  # rank 0's clock decides for every rank

        def eval_and_report() -> None:
            rec = self.evaluate_and_save()
            if rec is None:
                return
            msg = (
                f"step {rec['step']:6d}  {rec['elapsed_s']:7.1f}s  held-out bound {rec['heldout_bpd']:.4f} "
                f"± {rec['heldout_stderr']:.4f} bits/dim"
            )
            bar.write(msg) if bar is not None else self.log(msg)

        t_last = time.perf_counter()

        def tick() -> None:
            nonlocal t_last
            now = time.perf_counter()
            self.elapsed += now - t_last  # wall clock: the budget counts evaluations too
            t_last = now

        with self.rng_scope():
            self.model.train()
            self.train_model.train()
            if self.step_count == 0 and not self.history and cfg.eval_at_start:
                eval_and_report()
                tick()
            while not done():
                self.step()
                tick()
                if bar is not None:
                    bar.update(1 if cfg.steps else int(self.elapsed) - bar.n)
                    if self.history and "train_simple" in self.history[-1]:
                        h = self.history[-1]
                        bar.set_postfix(simple=f"{h['train_simple']:.4f}", bound=f"{h['train_bound_bpd']:.3f}")
                if self.step_count % cfg.eval_every == 0 or done():
                    eval_and_report()
                    tick()
        if bar is not None:
            bar.close()
        summary = self.summary()
        if self.dist.enabled:
            summary["distributed"] = self._check_ranks()
            if self.dist.is_main:
                atomic_write_json(self.out / "metrics.json", summary)
        return summary

    def _check_ranks(self) -> dict:
        """Every rank's weight digests (model and EMA); a RuntimeError if they differ (DDP failed to sync)."""
        mine = (weights_digest(self.model.net), weights_digest(self.ema.net))
        digests = self.dist.all_gather(mine)
        if any(d != digests[0] for d in digests):
            raise RuntimeError(f"DDP ranks hold different weights after {self.step_count} steps: {digests}")
        return {
            "world_size": self.dist.world,
            "backend": self.dist.backend,
            "per_rank_batch": self.cfg.batch_size // self.dist.world,
            "weights_sha256_per_rank": [d[0] for d in digests],
            "ema_sha256_per_rank": [d[1] for d in digests],
        }


def train(
    cfg: TrainConfig, out_dir: str | Path, *, resume: bool = False, progress: bool = True, log=print, dist=None
) -> dict:
    """Train (or resume) a DDPM; returns the run summary (also in ``DIR/metrics.json``).  ``dist``: an
    :class:`elbo_lab.distributed.Dist` when launched by torchrun (see the module docstring).  ``out_dir`` is
    claimed for this run first by the process that writes it (:func:`elbo_lab.io.claim_output_dir`); an existing
    run is continued only with ``resume``."""
    cfg.validate()  # before anything is written
    if dist is not None and not dist.is_main:  # rank 0 owns the directory
        return Trainer(cfg, out_dir, resume=resume, log=log, dist=dist).run(progress=progress)
    with claim_output_dir(out_dir, tool="elbo-lab train ddpm", legacy=("last.pt",)):
        if not resume and (Path(out_dir) / "last.pt").exists():
            raise CheckpointError(
                f"{out_dir} holds a DDPM run ({Path(out_dir) / 'last.pt'}): pass --resume to continue it, "
                "or choose another --out"
            )
        return Trainer(cfg, out_dir, resume=resume, log=log, dist=dist).run(progress=progress)

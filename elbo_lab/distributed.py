"""torch.distributed for ``bound`` (images sharded across ranks, results gathered to rank 0) and ``train ddpm``
(DistributedDataParallel).  Launch with ``torchrun --standalone --nproc_per_node=N elbo-lab ...``; without
torchrun's environment (``WORLD_SIZE`` unset or 1) everything runs in one process as before.

Backend: NCCL when the device is CUDA (rank r uses ``cuda:LOCAL_RANK``), gloo on the CPU.  Results are gathered
over a gloo group in either case (they are small CPU tensors).  Only rank 0 prints and writes files.

Why the numbers do not depend on N: ``bound`` gives each rank a contiguous block of images together with their
indices in the split (``image_ids``), and the engine keys every ε and every step choice by (seed, image id, step,
draw) (:func:`elbo_lab.bound.keyed_noise`); the importance proposal is estimated once, on rank 0, from the same
pilot images as in one process, and broadcast.  ``train ddpm`` draws the global minibatch, its steps and its
noise from the same seeded generators on every rank (so every rank knows the whole batch) and each rank
computes the loss of its slice; DDP averages the gradients, so a step is the step of the global batch.
Tests: ``tests/test_distributed.py`` (2 CPU processes under torchrun, the real engine).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import torch

from .errors import ElboLabError

__all__ = ["BatchInvariant", "Dist", "setup", "shard_range", "sharded_bound", "weights_digest"]


@dataclass
class Dist:
    """This process's place in the run: rank, world size, local rank, backend (None when not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None
    device: str = "cpu"
    _cpu_group: object = None

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self) -> str:
        return f"{self.world} processes ({self.backend})" if self.enabled else "1 process"

    # -- collectives (no-ops in one process) ----------------------------------------------------------------------

    def gather(self, obj):
        """``obj`` of every rank, in rank order, on rank 0 (None elsewhere); [obj] in one process."""
        if not self.enabled:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.world if self.is_main else None
        dist.gather_object(obj, out, dst=0, group=self._cpu_group)
        return out

    def all_gather(self, obj) -> list:
        """``obj`` of every rank, in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.world
        dist.all_gather_object(out, obj, group=self._cpu_group)
        return out

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every rank."""
        if not self.enabled:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0, group=self._cpu_group)
        return box[0]

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier(group=self._cpu_group)

    def close(self, sync: bool = True) -> None:
        """Leave the job.  ``sync`` (after a normal end): wait for every rank first -- rank 0 still writes the
        checkpoint, JSON or report after the others are done, and a rank that destroyed the process group under it
        once aborted at exit ("terminate called without an active exception", a loaded CI run).  After an error
        (``sync=False``) no rank waits for the others."""
        global _CURRENT
        if self.enabled:
            import torch.distributed as dist

            if dist.is_initialized():
                if sync:
                    dist.barrier(group=self._cpu_group)
                dist.destroy_process_group()
            _CURRENT = None


_CURRENT: Dist | None = None


def setup(device_spec: str = "auto") -> tuple[Dist, str]:
    """Join the torchrun job if there is one: (Dist, device spec for this rank).  Idempotent.

    With CUDA (``device_spec`` auto or cuda, a GPU present) rank r takes ``cuda:LOCAL_RANK`` and the backend is
    NCCL; otherwise gloo on the CPU.  ``--device cuda:I`` cannot be combined with several processes.
    """
    global _CURRENT
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), device_spec
    if _CURRENT is not None:
        return _CURRENT, _CURRENT.device
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_spec in ("auto", "cuda") and torch.cuda.is_available()
    if device_spec.startswith("cuda:"):
        raise ElboLabError(f"--device {device_spec}: with torchrun each rank takes cuda:LOCAL_RANK; use --device cuda")
    if device_spec == "cuda" and not use_cuda:
        raise ElboLabError("--device cuda: CUDA is not available on this machine (use --device cpu or auto)")
    if use_cuda:
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    else:
        device = "cpu"
    backend = "nccl" if use_cuda else "gloo"
    dist.init_process_group(backend=backend)
    cpu_group = dist.new_group(backend="gloo") if backend != "gloo" else None
    _CURRENT = Dist(rank, dist.get_world_size(), local, backend, device, cpu_group)
    return _CURRENT, device


def shard_range(n: int, rank: int, world: int) -> tuple[int, int]:
    """[start, stop) of rank's contiguous block of n items; blocks differ in size by at most one."""
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def weights_digest(module: torch.nn.Module) -> str:
    """SHA-256 of a module's parameters and buffers (names, dtypes, shapes and bytes), for comparing ranks."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def sharded_bound(dist: Dist, eps_model, schedule, x0: torch.Tensor, **kw):
    """:func:`elbo_lab.bound.variational_bound` of ``x0`` with its images split into contiguous blocks across the
    ranks and the per-image results gathered, in image order, on rank 0 (which gets the whole
    :class:`~elbo_lab.bound.BoundResult`; other ranks get None).  In one process: ``variational_bound`` itself.

    Image i is evaluated with image id i (``image_ids``), so its ε and its steps are the ones one process would
    draw; the importance proposal, when not given, is estimated on rank 0 from the same pilot images and with the
    same arguments as ``variational_bound`` uses, then broadcast (its evaluations are counted once).
    """
    import inspect
    from dataclasses import fields

    from .bound import BoundResult, pilot_proposal, variational_bound

    if not dist.enabled:
        return variational_bound(eps_model, schedule, x0, **kw)
    if "image_ids" in kw:
        raise ValueError("sharded_bound assigns image_ids itself (the images' indices in x0)")
    if kw.get("progress") and not dist.is_main:
        kw = {**kw, "progress": False}  # one progress bar (rank 0's block), not one per process
    N = x0.shape[0]
    n_pilot = 0
    if kw.get("estimator") == "importance" and kw.get("proposal") is None:
        defaults = inspect.signature(variational_bound).parameters
        proposal = None
        if dist.is_main:  # the same pilot one process runs (bound.pilot_proposal), on rank 0 only, then broadcast
            pk = {name: kw[name] for name in ("model", "variance", "decoder", "levels", "form") if name in kw}
            proposal, n_pilot = pilot_proposal(
                eps_model,
                schedule,
                x0,
                pilot_images=kw.get("pilot_images", defaults["pilot_images"].default),
                grid=kw.get("pilot_grid", defaults["pilot_grid"].default),
                draws=kw.get("pilot_draws", defaults["pilot_draws"].default),
                generator=kw.get("generator"),
                chunk_size=kw.get("chunk_size", defaults["chunk_size"].default),
                model_dtype=kw.get("model_dtype") or x0.dtype,
                **pk,
            )
            proposal = proposal.cpu()
        kw = {**kw, "proposal": dist.broadcast(proposal).to(x0.device)}
    start, stop = shard_range(N, dist.rank, dist.world)
    local = None
    if stop > start:
        res = variational_bound(eps_model, schedule, x0[start:stop], image_ids=torch.arange(start, stop), **kw)
        local = {f.name: getattr(res, f.name) for f in fields(res)}
        local = {k: (v.cpu() if torch.is_tensor(v) else v) for k, v in local.items()}
    parts = [p for p in dist.gather(local) or [] if p is not None]
    if not dist.is_main:
        return None
    n_local = [int(p["total"].shape[0]) for p in parts]
    merged = {}
    for name, first in parts[0].items():
        values = [p[name] for p in parts]
        per_image = (
            torch.is_tensor(first)
            and name != "proposal"
            and all(torch.is_tensor(v) and v.ndim >= 1 and v.shape[0] == n for v, n in zip(values, n_local))
        )
        if per_image:
            merged[name] = torch.cat(values)
        elif name == "n_evals":
            merged[name] = sum(values) + n_pilot
        elif name == "n_pilot_evals":
            merged[name] = n_pilot
        else:
            merged[name] = first
    return BoundResult(**merged)


class BatchInvariant:
    """Calls an ε-model on micro-batches of exactly ``rows`` rows (the last one padded by repeating its first row,
    the padding's outputs dropped), so that each row's output does not depend on how many rows it was evaluated
    with.  Needed because float32 kernels choose their algorithm by batch size (measured on this CPU: rows of a
    batch of ≤ 10 differ by ~3e-8 from the same rows in a batch of 50), and sharding changes the batch sizes.
    Cost: at most ``rows`` − 1 padded rows per call (``bound`` uses 32 rows on the CPU, 256 on a GPU).
    ``schedule`` is passed through."""

    def __init__(self, model, rows: int = 32):
        if rows < 1:
            raise ValueError(f"rows must be >= 1, got {rows}")
        self.model, self.rows = model, rows
        self.schedule = getattr(model, "schedule", None)

    def __call__(self, xt: torch.Tensor, k: torch.Tensor):
        outs = []
        for i in range(0, xt.shape[0], self.rows):
            x, kk = xt[i : i + self.rows], k[i : i + self.rows]
            n = x.shape[0]
            if n < self.rows:
                x = torch.cat([x, x[:1].expand(self.rows - n, *x.shape[1:])])
                kk = torch.cat([kk, kk[:1].expand(self.rows - n)])
            out = self.model(x, kk)
            outs.append(tuple(o[:n] for o in out) if isinstance(out, (tuple, list)) else out[:n])
        if isinstance(outs[0], tuple):
            return tuple(torch.cat(parts) for parts in zip(*outs))
        return torch.cat(outs)

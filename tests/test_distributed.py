"""torch.distributed for real: 2 CPU processes (gloo) under ``python -m torch.distributed.run --standalone``, the
real engine and the real CLI, no mocks.

- ``train ddpm`` with DistributedDataParallel: the run completes, rank 0's checkpoint loads, every rank held the same
  weights (SHA-256 per rank in metrics.json = the checkpoint's), and -- with dropout off -- the 2-process run equals
  the 1-process run with the same global batch up to float32 rounding of the gradient all-reduce (a wrong shard,
  a missing gradient average or an unsynchronised sampler moves the weights by ~lr = 1e-3).
- ``bound`` with images sharded across ranks and gathered on rank 0: the per-image numbers equal one process's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

from elbo_lab.cli import main as cli
from elbo_lab.distributed import shard_range, weights_digest

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def torchrun(args: list[str], nproc: int = 2, timeout: int = 240) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    proc = subprocess.run(
        [*argv, "-m", "elbo_lab.cli", *args], env=ENV, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def test_shard_range_covers_everything_once():
    for n in (0, 1, 5, 24):
        for world in (1, 2, 3, 7):
            blocks = [shard_range(n, r, world) for r in range(world)]
            assert [i for a, b in blocks for i in range(a, b)] == list(range(n))
            assert max(b - a for a, b in blocks) - min(b - a for a, b in blocks) <= 1


TRAIN = ["train", "ddpm", "--steps", "4", "--batch-size", "8", "--T", "10", "--base-channels", "8",
         "--eval-every", "4", "--val-samples", "2", "--device", "cpu", "--no-progress", "--dropout", "0",
         "--loss", "vlb"]  # fmt: skip


def test_ddp_training_two_processes(tmp_path, capsys):
    from elbo_lab.ddpm import load_model

    proc = torchrun([*TRAIN, "--out", str(tmp_path / "ddp")])
    assert "DistributedDataParallel: 2 processes (gloo), 4 images per rank per step" in proc.stdout
    assert proc.stdout.count("trained 4 steps") == 1  # rank 0 alone reports
    m = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    d = m["distributed"]
    assert (d["world_size"], d["backend"], d["per_rank_batch"], m["step"]) == (2, "gloo", 4, 4)
    assert len(set(d["weights_sha256_per_rank"])) == 1 and len(set(d["ema_sha256_per_rank"])) == 1

    model, ckpt = load_model(tmp_path / "ddp" / "last.pt", weights="model")  # rank 0's checkpoint loads
    assert weights_digest(model.net) == d["weights_sha256_per_rank"][0]
    ema, _ = load_model(tmp_path / "ddp" / "last.pt", weights="ema")
    assert weights_digest(ema.net) == d["ema_sha256_per_rank"][0]

    assert cli([*TRAIN, "--out", str(tmp_path / "one")]) == 0  # the same global batch in one process
    capsys.readouterr()
    one = torch.load(tmp_path / "one" / "last.pt", weights_only=True)["model"]
    diff = max(float((ckpt["model"][k].double() - one[k].double()).abs().max()) for k in one)
    assert diff < 1e-5, diff
    assert ckpt["step"] == 4

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

import pytest
import torch

from elbo_lab.cli import main as cli
from elbo_lab.distributed import BatchInvariant, shard_range, weights_digest

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def torchrun(args: list[str], nproc: int = 2, timeout: int = 240) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --standalone --nproc_per_node=N -m -- elbo_lab.cli ARGS`` (the ``--`` keeps
    torchrun's parser from taking ``--n`` for an abbreviation of its own ``--nnodes``)."""
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    proc = subprocess.run(
        [*argv, "-m", "--", "elbo_lab.cli", *args], env=ENV, capture_output=True, text=True, timeout=timeout
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


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """A 2-process DDP training run (its checkpoint is also what the sharded bound evaluates)."""
    out = tmp_path_factory.mktemp("ddp")
    return out, torchrun([*TRAIN, "--out", str(out / "ddp")])


def test_ddp_training_two_processes(ddp_run, capsys):
    from elbo_lab.ddpm import load_model

    tmp_path, proc = ddp_run
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


def test_bound_two_processes_gives_the_same_per_image_numbers(ddp_run, tmp_path, capsys):
    """1 process vs 2 (images 0-2 on rank 0, 3-4 on rank 1): the same JSON, per image, bit for bit.  The importance
    estimator exercises the keyed step draws and noise, the pilot on rank 0 and its broadcast."""
    ckpt = str(ddp_run[0] / "ddp" / "best.pt")
    args = ["bound", ckpt, "--n", "5", "--estimator", "importance", "--budget", "4", "--device", "cpu"]
    assert cli([*args, "--json", str(tmp_path / "one.json")]) == 0
    one_out = capsys.readouterr().out
    proc = torchrun([*args, "--json", str(tmp_path / "two.json")])
    one, two = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert (one.pop("processes"), two.pop("processes")) == (1, 2)
    assert len(one["per_image"]["total"]) == 5 and one["n_pilot_evals"] > 0
    assert one == two  # every number, per image and aggregated, identical
    assert proc.stdout.count("total ") == 1  # rank 0 alone prints
    strip = [line for line in proc.stdout.splitlines() if not line.startswith("device:")]
    assert strip == [line for line in one_out.splitlines() if not line.startswith("device:")]


def test_batch_invariant_rows_do_not_depend_on_batching():
    from elbo_lab.ddpm.model import build_eps_model, make_net_config, make_schedule

    s = make_schedule("cosine", 10)
    cfg = make_net_config((1, 8, 8), T=10, learned_variance=True, out_per_channel=17, base_channels=8)
    m = build_eps_model(cfg, s, param="categorical", levels=17, device="cpu", seed=0).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in m.net.parameters():  # non-zero weights everywhere (the output layer starts at zero)
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    x, k = torch.randn(40, 1, 8, 8, generator=g, dtype=torch.float64), torch.randint(0, 10, (40,), generator=g)
    cuts = ((0, 3), (3, 21), (21, 40))
    inv = BatchInvariant(m, rows=16)
    with torch.no_grad():
        raw_whole, raw_parts = m(x, k)[0], torch.cat([m(x[a:b], k[a:b])[0] for a, b in cuts])
        whole = inv(x, k)
        parts = [inv(x[a:b], k[a:b]) for a, b in cuts]
    if torch.equal(raw_whole, raw_parts):
        pytest.skip("this machine's kernels give batch-size-independent rows: nothing to protect against")
    for i in range(2):
        assert torch.equal(whole[i], torch.cat([p[i] for p in parts]))
    assert whole[0].shape == (40, 1, 8, 8)

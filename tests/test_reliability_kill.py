"""kill -9 and concurrent writers with real processes (issue 14 item 4): for ``train ddpm``, ``train vae`` and
``run``, a second writer is refused while the first runs (the flock is held across processes), and after the
first is killed with SIGKILL its directory is accepted again (the kernel drops the lock) and resumes exactly --
the resumed trainers end bit-identical to an uninterrupted run.  Tiny budgets: a few seconds of CPU each.
The full ``run`` resume after a kill is ``-m slow``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from elbo_lab.cli import main as cli
from elbo_lab.ddpm import TrainConfig, load_checkpoint, train
from elbo_lab.errors import OutputError

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _start(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV
    )


def _wait_for(cond, proc: subprocess.Popen, timeout: float = 180.0) -> None:
    deadline = time.time() + timeout
    while not cond():
        if proc.poll() is not None:
            raise AssertionError(f"the process ended early ({proc.returncode}): {proc.stderr.read()[-2000:]}")
        if time.time() > deadline:
            proc.kill()
            raise AssertionError("timed out waiting for the process")
        time.sleep(0.05)


def _kill9(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def _refused_in_use(capsys, argv) -> None:
    rc = cli([str(a) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "in use by another" in err, err


def test_ddpm_second_writer_refused_then_kill9_resumes_bit_identical(tmp_path, capsys):
    out = tmp_path / "run"
    opts = ["--T", "20", "--base-channels", "8", "--batch-size", "8", "--eval-every", "2", "--val-samples", "2"]
    proc = _start(["-m", "elbo_lab.cli", "train", "ddpm", "--steps", "100000", *opts, "--device", "cpu"]
                  + ["--out", str(out), "--no-progress"])  # fmt: skip

    def checkpointed() -> bool:
        try:
            return json.loads((out / "metrics.json").read_text())["step"] >= 2
        except (OSError, ValueError, KeyError):
            return False

    _wait_for(checkpointed, proc)
    _refused_in_use(capsys, ["train", "ddpm", "--resume", "--steps", "4", "--out", out, "--no-progress"])
    _kill9(proc)
    ckpt = load_checkpoint(out / "last.pt")  # intact after SIGKILL (atomic writes)
    s = ckpt["step"]
    cfg = TrainConfig(**ckpt["config"] | {"steps": s + 2, "minutes": None})
    resumed = train(cfg, out, resume=True, progress=False, log=lambda *a: None)  # the kernel dropped the lock
    assert resumed["step"] == s + 2
    train(cfg, tmp_path / "straight", progress=False, log=lambda *a: None)
    a, b = load_checkpoint(out / "last.pt"), load_checkpoint(tmp_path / "straight" / "last.pt")
    for key in ("model", "ema"):
        assert all(torch.equal(t, b[key][n]) for n, t in a[key].items()), key
    strip = [{k: v for k, v in r.items() if k != "elapsed_s"} for r in a["history"]]
    assert strip == [{k: v for k, v in r.items() if k != "elapsed_s"} for r in b["history"]]


def test_vae_second_writer_refused_then_kill9_resumes_bit_identical(tmp_path, capsys):
    from elbo_lab.vae.train import load_checkpoint as load_vae_checkpoint

    data = tmp_path / "x.npz"
    np.savez(data, x=np.random.default_rng(0).integers(0, 5, size=(40, 4, 4)))
    out = tmp_path / "vae"
    tiny = ["--hidden", "8", "--latent", "2", "--iwae-k", "2", "--eval-samples", "2", "--levels", "5"]
    argv = ["train", "vae", "--data", str(data), *tiny, "--patience", "100000", "--no-progress"]
    proc = _start(["-m", "elbo_lab.cli", *argv, "--epochs", "100000", "--out", str(out)])

    def epoch() -> int:
        try:
            return int(load_vae_checkpoint(out / "checkpoint.pt")["epoch"])
        except Exception:
            return -1

    _wait_for(lambda: epoch() >= 2, proc)
    _refused_in_use(capsys, [*argv, "--resume", "--epochs", "3", "--out", out])
    _kill9(proc)
    e = epoch()
    assert e >= 2
    assert cli([*argv, "--resume", "--epochs", str(e + 1), "--out", str(out)]) == 0, capsys.readouterr().err
    assert cli([*argv, "--epochs", str(e + 1), "--out", str(tmp_path / "straight")]) == 0
    a = load_vae_checkpoint(out / "checkpoint.pt")
    b = load_vae_checkpoint(tmp_path / "straight" / "checkpoint.pt")
    assert a["epoch"] == b["epoch"] == e + 1
    assert all(torch.equal(t, b["model"][n]) for n, t in a["model"].items())
    ma = json.loads((out / "metrics.json").read_text())
    mb = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    assert ma["bounds"] == mb["bounds"]


def _start_run(out: Path) -> subprocess.Popen:
    code = f"from elbo_lab.run import run_pipeline; run_pipeline({str(out)!r}, mode='smoke', log=lambda s: None)"
    return _start(["-c", code])


def test_run_second_writer_refused_then_kill9_leaves_an_accepted_directory(tmp_path):
    from elbo_lab.run import Pipeline

    out = tmp_path / "results"
    proc = _start_run(out)
    _wait_for(lambda: (out / "run.json").exists() and (out / "stages").is_dir(), proc)
    with pytest.raises(OutputError, match="in use by another"):
        Pipeline(out, mode="smoke", seed=0, device="cpu", log=lambda s: None)
    time.sleep(0.5)  # somewhere inside the first stage
    _kill9(proc)
    pipe = Pipeline(out, mode="smoke", seed=0, device="cpu", log=lambda s: None)  # accepted: ours, unlocked
    for p in (out / "stages").glob("*.json"):
        json.loads(p.read_text())  # no torn stage file
    marker = json.loads((out / "run.json").read_text())  # the first run's marker, kept as it was written
    assert (marker["tool"], marker["mode"], marker["seed"]) == ("elbo-lab run", "smoke", 0)
    assert (marker["ddpm_budget"], marker["threads"]) == (pipe.ddpm_budget, pipe.threads)
    pipe.lock.release()


@pytest.mark.slow
def test_run_killed_during_training_resumes_to_the_end(tmp_path):
    from elbo_lab.run import run_pipeline

    out = tmp_path / "results"
    proc = _start_run(out)
    _wait_for(lambda: (out / "stages" / "vae.json").exists(), proc, timeout=600)
    _kill9(proc)
    lines = []
    assert run_pipeline(out, mode="smoke", log=lines.append) in (0, 1)
    assert any("[vae] done earlier" in line for line in lines) and (out / "results.json").exists()

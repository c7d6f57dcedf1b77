"""Torch thread count, old default vs new, side by side in one run: ``elbo-lab sample --n 16`` and DDPM training steps.

The old behaviour was torch's own default (one intra-op thread per core: ``--threads 0`` now); the new default is
``--threads 1`` (elbo_lab/threads.py says why).  Each measurement runs in a fresh process, the two settings
alternate (A B A B ...) so that whatever else the machine is doing weighs on both alike, and the load average is
printed with each line.  Wall time is what a user waits; CPU time (user + system of the child) shows the cost of
the extra thread spinning or waiting.

    .venv/bin/python benchmarks/bench_threads.py [--repeats 2] [--train-steps 20] [--checkpoint runs/ddpm/best.pt]

Without ``--checkpoint`` a default-configuration DDPM (T = 1000) is made by one training step (sampling time does
not depend on the weights).  Prints a table and the ratio old/new of the median wall times.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRAIN_SNIPPET = """
import json, sys, time, torch
from elbo_lab.threads import apply_threads
n = apply_threads(int(sys.argv[1]))
from elbo_lab.ddpm.train import TrainConfig, Trainer
tr = Trainer(TrainConfig(steps=1, seed=0, device="cpu"), sys.argv[2], log=lambda s: None)
with tr.rng_scope():
    tr.model.train()
    tr.step()  # warm-up
    w, c = time.perf_counter(), time.process_time()
    for _ in range(int(sys.argv[3])):
        tr.step()
    print(json.dumps({"threads": n, "wall": (time.perf_counter() - w) / int(sys.argv[3]),
                      "cpu": (time.process_time() - c) / int(sys.argv[3])}))
"""


def _load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def _child(cmd: list[str]) -> tuple[float, float, str]:
    """(wall s, child CPU s, stdout) of one subprocess."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{p.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, p.stdout


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=2, help="measurements per setting and task (default 2)")
    ap.add_argument("--train-steps", type=int, default=20, help="timed training steps per measurement (default 20)")
    ap.add_argument("--checkpoint", help="a DDPM checkpoint to sample from (default: make one)")
    ap.add_argument("--json", help="also write the measurements here")
    args = ap.parse_args(argv)
    py = sys.executable
    tmp = Path(tempfile.mkdtemp(prefix="bench-threads-"))
    ckpt = args.checkpoint
    if ckpt is None:
        _child([py, "-m", "elbo_lab.cli", "train", "ddpm", "--steps", "1", "--out", str(tmp / "ddpm"), "--no-progress"])
        ckpt = str(tmp / "ddpm" / "best.pt")
    settings = {"old (torch default, --threads 0)": 0, "new (--threads 1)": 1}
    rows = []
    print(f"{os.cpu_count()} CPUs; torch default = one thread per core; load at start {_load()}")
    print(f"{'task':<29}{'setting':<34}{'wall s':>9}{'CPU s':>9}  load (1, 5, 15 min)")
    for rep in range(args.repeats):
        for name, n in settings.items():
            out = tmp / f"s{rep}_{n}.png"
            w, c, _ = _child(
                [
                    py,
                    "-m",
                    "elbo_lab.cli",
                    "sample",
                    ckpt,
                    "--n",
                    "16",
                    "--out",
                    str(out),
                    "--threads",
                    str(n),
                    "--no-progress",
                ]
            )
            rows.append({"task": "sample --n 16 (T = 1000)", "setting": name, "wall": w, "cpu": c, "load": _load()})
            print(f"{rows[-1]['task']:<29}{name:<34}{w:>9.2f}{c:>9.2f}  {rows[-1]['load']}")
        for name, n in settings.items():
            _, _, so = _child([py, "-c", TRAIN_SNIPPET, str(n), str(tmp / f"t{rep}_{n}"), str(args.train_steps)])
            r = json.loads(so.strip().splitlines()[-1])
            rows.append(
                {
                    "task": "one training step (B = 128)",
                    "setting": name,
                    "wall": r["wall"],
                    "cpu": r["cpu"],
                    "load": _load(),
                }
            )
            print(f"{rows[-1]['task']:<29}{name:<34}{r['wall']:>9.3f}{r['cpu']:>9.3f}  {rows[-1]['load']}")
    print()
    for task in dict.fromkeys(r["task"] for r in rows):
        med = {
            name: statistics.median(r["wall"] for r in rows if r["task"] == task and r["setting"] == name)
            for name in settings
        }
        old, new = med.values()
        print(f"{task}: median wall old {old:.3f} s, new {new:.3f} s, old/new = {old / new:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

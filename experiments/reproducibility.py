"""Same command + seed = same numbers, whatever the load: run ``elbo-lab run`` twice into two fresh directories and
diff every number of their results.json (timings aside), printing each run's wall and CPU time and the load.

    .venv/bin/python experiments/reproducibility.py                      # two quick runs, one after the other
    .venv/bin/python experiments/reproducibility.py --parallel           # both at once, each loading the other
    .venv/bin/python experiments/reproducibility.py --busy 1             # ... with a CPU-bound process beside them
    .venv/bin/python experiments/reproducibility.py --compare DIR1 DIR2  # only diff two finished runs

Exit status 0 when the numbers are identical, 1 when any differs (each difference is printed), 2 on bad input.
What is left out of the comparison: wall/CPU times (``seconds``, ``_seconds``, ``cpu_seconds``, ``elapsed_s``),
the timestamp, text fields that are only a duration ("1.12 s"), and the output directory's own path inside strings.
Everything else -- every bound, standard error, check value, training-curve point and figure file name -- must
match exactly (floats bit for bit).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TIMING_KEYS = {"seconds", "_seconds", "cpu_seconds", "_cpu_seconds", "elapsed_s", "time", "total_this_invocation"}
DURATION = re.compile(r"^\d+(\.\d+)? s$")  # a text field that is only a duration (a derivation claim's detail)


def flatten(x, prefix="", out=None, root=""):
    """{json.path: leaf} for every leaf of a results.json, timing keys dropped, the run directory replaced."""
    out = {} if out is None else out
    if isinstance(x, dict):
        for k, v in x.items():
            if k not in TIMING_KEYS:
                flatten(v, f"{prefix}.{k}" if prefix else k, out, root)
    elif isinstance(x, list):
        for i, v in enumerate(x):
            flatten(v, f"{prefix}[{i}]", out, root)
    elif not (isinstance(x, str) and DURATION.match(x)):
        out[prefix] = x.replace(root, "<OUT>") if isinstance(x, str) and root else x
    return out


def compare(a: Path, b: Path) -> list[str]:
    """The differing leaves of a/results.json and b/results.json (empty: identical numbers)."""
    # only the absolute path is masked: a relative name such as "results" is also an ordinary word in the text
    fa = flatten(json.loads((a / "results.json").read_text()), root=str(a.resolve()))
    fb = flatten(json.loads((b / "results.json").read_text()), root=str(b.resolve()))
    diffs = [f"only in {a}: {k}" for k in fa.keys() - fb.keys()] + [f"only in {b}: {k}" for k in fb.keys() - fa.keys()]
    diffs += [f"{k}: {fa[k]!r} != {fb[k]!r}" for k in sorted(fa.keys() & fb.keys()) if fa[k] != fb[k]]
    return diffs


def _busy() -> subprocess.Popen:
    """A CPU-bound process (pure-Python loop) to load the machine; the caller kills it by its pid."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def _load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def _command(out: Path, args) -> list[str]:
    cmd = [sys.executable, "-m", "elbo_lab.cli", "run", "--out", str(out), "--seed", str(args.seed)]
    return cmd + ["--threads", str(args.threads)] + ([f"--{args.mode}"] if args.mode != "quick" else [])


def _start(out: Path, args) -> dict:
    log = open(out.parent / f"{out.name}.log", "w")  # noqa: SIM115 (closed in _finish)
    p = subprocess.Popen(_command(out, args), stdout=log, stderr=subprocess.STDOUT)
    return {"out": out, "proc": p, "log": log, "t0": time.perf_counter(), "load_before": _load()}


def _finish(job: dict) -> dict:
    rc = job["proc"].wait()
    wall = time.perf_counter() - job["t0"]
    job["log"].close()
    out = job["out"]
    if rc != 0:
        tail = (out.parent / f"{out.name}.log").read_text()[-2000:]
        raise SystemExit(f"{tail}\n`elbo-lab run --out {out}` exited {rc}")
    res = json.loads((out / "results.json").read_text())
    cpu = res.get("cpu_seconds", {}).get("total_this_invocation")
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "load_before": job["load_before"],
        "load_after": _load(),
        "headline": res.get("headline", {}).get("text"),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--compare", nargs=2, metavar="DIR", help="only compare two finished runs")
    ap.add_argument("--mode", choices=("quick", "full"), default="quick")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads of each run (default 1)")
    ap.add_argument("--busy", type=int, default=0, metavar="N", help="CPU-bound processes running beside the runs")
    ap.add_argument("--parallel", action="store_true", help="run the two at the same time (each loads the other)")
    ap.add_argument("--keep", metavar="DIR", help="parent of the two run directories (default: a temporary one)")
    args = ap.parse_args(argv)
    if args.compare:
        a, b = map(Path, args.compare)
        for d in (a, b):
            if not (d / "results.json").is_file():
                print(f"reproducibility: error: {d / 'results.json'} does not exist", file=sys.stderr)
                return 2
    else:
        parent = Path(args.keep or tempfile.mkdtemp(prefix="elbo-lab-repro-"))
        parent.mkdir(parents=True, exist_ok=True)
        a, b = parent / "run1", parent / "run2"
        for d in (a, b):
            if d.exists():
                print(f"reproducibility: error: {d} exists; choose another --keep", file=sys.stderr)
                return 2
        busy = [_busy() for _ in range(args.busy)]
        try:
            how = "at the same time" if args.parallel else "one after the other"
            print(
                f"two `elbo-lab run` (mode {args.mode}, seed {args.seed}, threads {args.threads}) {how}, with "
                f"{args.busy} extra CPU-bound process(es) beside them; {os.cpu_count()} CPUs; load {_load()}"
            )
            jobs = [_start(a, args), _start(b, args)] if args.parallel else None
            for i, d in enumerate((a, b)):
                r = _finish(jobs[i] if jobs else _start(d, args))
                print(f"{d}: wall {r['wall_s']:.1f} s, CPU {r['cpu_s']} s, load {r['load_before']} → {r['load_after']}")
                print(f"    headline: {r['headline']}", flush=True)
        finally:
            for p in busy:
                p.kill()
                p.wait()
    diffs = compare(a, b)
    n = len(flatten(json.loads((a / "results.json").read_text())))
    if diffs:
        print(f"{len(diffs)} of {n} results.json values differ:")
        for d in diffs[:50]:
            print("  " + d)
        return 1
    print(f"identical: all {n} results.json values of {a} and {b} agree (timings aside)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark: all twelve derivations (build + every step's SymPy proof) in one process, per-derivation timings.

Target (issue 2): under 10 s in total on the 2-core development machine.  Prints wall and CPU seconds; CPU time
is the steadier figure on a shared machine.  Usage: ``.venv/bin/python benchmarks/bench_derive.py``.
"""

from __future__ import annotations

import time


def main() -> int:
    t_wall, t_cpu = time.perf_counter(), time.process_time()
    from elbo_lab.symbolic import REGISTRY, build

    rows = []
    for name, eq in REGISTRY.items():
        w, c = time.perf_counter(), time.process_time()
        report = build(name).verify()
        rows.append((eq, name, len(report.steps), report.ok, time.perf_counter() - w, time.process_time() - c))
    wall, cpu = time.perf_counter() - t_wall, time.process_time() - t_cpu
    print(f"{'':4} {'derivation':<20} {'steps':>5} {'ok':>3} {'wall s':>7} {'cpu s':>7}")
    for eq, name, n, ok, w, c in rows:
        print(f"{eq:<4} {name:<20} {n:>5} {'✓' if ok else '✗':>3} {w:>7.2f} {c:>7.2f}")
    print(f"total (including imports): {wall:.2f} s wall, {cpu:.2f} s CPU; target < 10 s")
    return 0 if all(r[3] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())

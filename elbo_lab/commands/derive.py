"""``elbo-lab derive [NAME ...] [--latex] [--json FILE]``: print each derivation step by step with ✓/✗."""

from __future__ import annotations

import argparse
import sys
import time

from ..errors import ElboLabError

HELP = "run the step-checked SymPy derivations (E1-E12); exit 0 only when every step checks"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="*", metavar="NAME", help="derivations to run (default: all)")
    p.add_argument("--latex", action="store_true", help="print each step as LaTeX instead of plain text")
    p.add_argument("--json", metavar="FILE", help="write the steps, checks and timings as JSON")
    p.add_argument("--list", action="store_true", help="list the derivation names and exit")


def main(args: argparse.Namespace) -> int:
    from ..io import atomic_write_json
    from ..symbolic import REGISTRY, get, names

    if args.list:
        for n in names():
            print(f"{REGISTRY[n]:>4}  {n}")
        return 0
    unknown = [n for n in args.names if n not in REGISTRY]
    if unknown:
        raise ElboLabError(f"unknown derivation {unknown[0]!r}; valid names: {', '.join(names())}")
    selected = args.names or names()
    reports = []
    t0 = time.perf_counter()
    for n in selected:
        report = get(n).verify()
        reports.append(report)
        print(report.render_text(latex=args.latex), flush=True)
        print()
    total = time.perf_counter() - t0
    n_steps = sum(len(r.steps) for r in reports)
    n_ok = sum(s.checked for r in reports for s in r.steps)
    bad = [r.derivation.name for r in reports if not r.ok]
    print(f"{n_ok}/{n_steps} steps checked in {len(reports)} derivations, {total:.1f} s", end="")
    print(f"; FAILED: {', '.join(bad)}" if bad else "; all ✓")
    if args.json:
        atomic_write_json(args.json, {"derivations": [r.to_dict() for r in reports], "seconds": round(total, 3)})
    sys.stdout.flush()
    return 1 if bad else 0

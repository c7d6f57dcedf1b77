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
    p.add_argument(
        "--self-test",
        action="store_true",
        help="re-run every step's check on perturbed after-expressions (after + δ, after·(1 + δ), a relation "
        "reversed) and require each to fail; exit 1 if any step's check survives or an export is no step's result",
    )


def main(args: argparse.Namespace) -> int:
    from ..io import atomic_write_json, check_output_file
    from ..symbolic import REGISTRY, get, names

    if args.json:
        check_output_file(args.json, "--json")  # before the computing

    if args.list:
        for n in names():
            print(f"{REGISTRY[n]:>4}  {n}")
        return 0
    unknown = [n for n in args.names if n not in REGISTRY]
    if unknown:
        raise ElboLabError(f"unknown derivation {unknown[0]!r}; valid names: {', '.join(names())}")
    selected = args.names or names()
    if args.self_test:
        return _self_test(selected)
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


def _self_test(selected: list[str]) -> int:
    from ..symbolic import REGISTRY, get

    t0 = time.process_time()
    n_tested = n_survived = n_unchecked = 0
    print(f"{'':4} {'derivation':<20} {'steps':>5} {'survived':>8} {'computed':>8} {'typed':>5} {'special':>7}")
    details = []
    for n in selected:
        d = get(n)
        results = d.self_test()
        survived = [(i, r) for i, r in enumerate(results, 1) if not r.ok]
        unchecked = d.unchecked_exports()
        counts = d.counts()
        n_tested += len(results)
        n_survived += len(survived)
        n_unchecked += len(unchecked)
        print(
            f"{REGISTRY[n]:<4} {n:<20} {len(results):>5} {len(survived):>8} {counts['computed']:>8} "
            f"{counts['typed']:>5} {counts['special']:>7}"
        )
        for i, r in survived:
            details.append(f"  {REGISTRY[n]} step {i} ({r.step.statement[:70]}): survived {', '.join(r.survived)}")
        for name in unchecked:
            details.append(f"  {REGISTRY[n]} export {name!r} is not the after-expression of a checked step")
        for i, st in enumerate(d.steps, 1):
            if st.scope:
                details.append(f"  {REGISTRY[n]} step {i}: special case [{st.scope}]")
    print("\n".join(details))
    print(
        f"self-test: {n_tested} steps tested, {n_survived} survived their perturbations, "
        f"{n_unchecked} exports outside the steps ({time.process_time() - t0:.1f} s CPU)"
    )
    return 1 if n_survived or n_unchecked else 0

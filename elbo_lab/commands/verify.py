"""``elbo-lab verify [--json FILE] [PREFIX ...]``: every registered claim as a table; exit 0 only when all pass."""

from __future__ import annotations

import argparse

from ..options import arg

HELP = "run the cross-checks (claim · expected · observed · tolerance · ✓/✗); exit 0 only when all pass"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("prefixes", nargs="*", metavar="PREFIX", help="only claims whose id starts with PREFIX")
    p.add_argument("--json", metavar="FILE", help="write the table as JSON")
    p.add_argument("--seed", type=arg("seed"), default=0, help="seed for the Monte Carlo claims (default 0)")


def format_table(records) -> str:
    head = ("claim", "expected", "observed", "tolerance", "")
    rows = [(r.id + "  " + r.statement, r.expected, r.observed, r.tolerance, "✓" if r.passed else "✗") for r in records]
    widths = [min(max(len(str(row[i])) for row in [head, *rows]), 70) for i in range(5)]

    def fmt(row):
        return "  ".join(str(c)[: widths[i]].ljust(widths[i]) for i, c in enumerate(row)).rstrip()

    return "\n".join([fmt(head), fmt(["-" * w for w in widths]), *map(fmt, rows)])


def main(args: argparse.Namespace) -> int:
    from ..checks.registry import run_claims
    from ..io import atomic_write_json, check_output_file

    if args.json:
        check_output_file(args.json, "--json")  # before the computing
    from ..provenance import provenance

    records = run_claims(
        seed=args.seed,
        selected=args.prefixes or None,
        progress=lambda r: print(f"  {'✓' if r.passed else '✗'} {r.id} ({r.seconds:.1f} s)", flush=True),
    )
    print()
    print(format_table(records))
    n_bad = sum(not r.passed for r in records)
    print(f"\n{len(records) - n_bad}/{len(records)} claims pass" + (f"; {n_bad} FAILED" if n_bad else ""))
    if args.json:
        atomic_write_json(args.json, {**provenance(), "seed": args.seed, "claims": [r.to_dict() for r in records]})
    if not records:
        print("no claims matched")
        return 1
    return 1 if n_bad else 0

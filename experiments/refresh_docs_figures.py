"""Redraw the report's figures from a finished ``elbo-lab run`` directory into docs/figures/ (PNG + the data
table NAME.json), without recomputing anything: the numbers are the run's stage results.

    .venv/bin/python experiments/refresh_docs_figures.py RUN_DIR [--dest docs/figures]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from elbo_lab import figures as F
from elbo_lab import run as R
from elbo_lab.data import load_digits


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir")
    ap.add_argument("--dest", default=str(Path(__file__).resolve().parents[1] / "docs" / "figures"))
    args = ap.parse_args(argv)
    run, dest = Path(args.run_dir), Path(args.dest)
    marker = run / R.MARKER
    if not marker.is_file():
        print(f"refresh_docs_figures: error: {run} is not an `elbo-lab run` directory", file=sys.stderr)
        return 2
    cfg = json.loads(marker.read_text())
    r = {p.stem: json.loads(p.read_text()) for p in (run / "stages").glob("*.json")}

    class Pipe:  # the parts of a Pipeline that figure_tables reads
        dataset = load_digits()
        budget = R.BUDGETS[cfg["mode"]]

    dest.mkdir(parents=True, exist_ok=True)
    for name, tab in R.figure_tables(Pipe(), r).items():
        fig = F.FIGURES[name](tab)
        F.save(fig, dest, name, {**tab, "source": {k: cfg.get(k) for k in ("mode", "seed", "ddpm_budget", "threads")}})
        (dest / f"{name}.svg").unlink(missing_ok=True)  # the docs embed the PNG; the SVG stays in the run directory
        print(f"{dest / name}.png (+ .json)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

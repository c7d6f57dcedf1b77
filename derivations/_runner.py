"""Shared front-end for the ``derivations/NN_*.py`` scripts: print the named derivations step by step."""

from __future__ import annotations

import sys


def show(*names: str, latex: bool = False) -> bool:
    from elbo_lab.symbolic import get

    ok = True
    for name in names:
        report = get(name).verify()
        print(report.render_text(latex=latex))
        print()
        ok &= report.ok
    return ok


def main(*names: str) -> None:
    latex = "--latex" in sys.argv[1:]
    sys.exit(0 if show(*names, latex=latex) else 1)

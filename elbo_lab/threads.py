"""Torch's intra-op thread count, set deliberately by every command (``--threads N``).

Why a default of 1: on a machine whose cores are shared with other work, torch's own default (one thread per
core) oversubscribes them, and a thread that waits for a descheduled peer stalls the whole operation -- a
batch-64 U-Net call measured 5.6 s with 2 threads and 0.36 s with 1 on the shared 2-core machine (issue 10;
``benchmarks/bench_threads.py`` measures it side by side).  The networks here are small (8×8 digits), so one
thread also loses little on an idle machine.  ``--threads 0`` keeps torch's default.

Reproducibility: results are bit-identical for a fixed thread count (and device); a different count may change
the order of floating-point reductions, so the count is recorded with every run (``results.json``).
"""

from __future__ import annotations

import argparse

__all__ = ["DEFAULT_THREADS", "add_threads_option", "apply_threads", "torch_default_threads"]

DEFAULT_THREADS = 1


def torch_default_threads() -> int:
    """The count torch picks by itself (one per available core), without changing anything."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def add_threads_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--threads",
        type=int,
        default=DEFAULT_THREADS,
        metavar="N",
        help=f"torch intra-op threads (default {DEFAULT_THREADS}: no oversubscription on shared cores; "
        "0 = torch's default, one per core)",
    )


def apply_threads(n: int | None) -> int:
    """Set torch's intra-op thread count to ``n`` (0 or None: one per available core); returns the count in force."""
    import torch

    from .errors import ElboLabError

    if n is None or n == 0:
        n = torch_default_threads()
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ElboLabError(f"--threads must be an integer >= 0, got {n!r}")
    torch.set_num_threads(n)
    return torch.get_num_threads()

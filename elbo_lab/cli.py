"""The ``elbo-lab`` command line.  Each subcommand lives in ``elbo_lab/commands/<name>.py`` and provides
``HELP``, ``configure(parser)`` and ``main(args) -> int``; ``train`` dispatches to ``train_vae`` and
``train_ddpm``.

Failures a user can cause -- bad options (argparse and the range checks in :mod:`elbo_lab.options`), bad data or
checkpoints (:class:`~elbo_lab.errors.ElboLabError`), unwritable outputs (read-only, immutable, full disk, a
directory where a file belongs: any :class:`OSError`) and running out of memory -- print ONE line
``elbo-lab: error: ...`` on stderr and exit 2, for every command (:func:`elbo_lab.errors.user_message`).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .errors import user_message
from .threads import add_threads_option, apply_threads

# subcommand -> module in elbo_lab.commands (modules that do not exist yet are skipped)
COMMANDS = {
    "run": "run",
    "derive": "derive",
    "verify": "verify",
    "bound": "bound",
    "sample": "sample",
}
TRAIN_COMMANDS = {"vae": "train_vae", "ddpm": "train_ddpm"}
THREADED = ("run", "bound", "sample", "verify")  # and every `train` command: they take --threads (threads.py)


def _load(module: str):
    try:
        return importlib.import_module(f"elbo_lab.commands.{module}")
    except ModuleNotFoundError as exc:
        if exc.name == f"elbo_lab.commands.{module}":
            return None
        raise


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no multi-line usage block): ``elbo-lab: error: ... (see ... --help)``."""

    def error(self, message: str):
        print(f"elbo-lab: error: {' '.join(message.split())} (see `{self.prog} --help`)", file=sys.stderr)
        self.exit(2)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = Parser(
        prog="elbo-lab",
        description="Checkable mathematics of diffusion models: derivations, cross-checks, trained models.",
    )
    parser.add_argument("--version", action="version", version=f"elbo-lab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in COMMANDS.items():
        mod = _load(module)
        if mod is None:
            continue
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        mod.configure(p)
        if name in THREADED:
            add_threads_option(p)
        p.set_defaults(_main=mod.main)
    train_mods = {k: _load(m) for k, m in TRAIN_COMMANDS.items()}
    if any(train_mods.values()):
        tp = sub.add_parser("train", help="train a model (vae or ddpm)")
        tsub = tp.add_subparsers(dest="model", metavar="MODEL", required=True)
        for name, mod in train_mods.items():
            if mod is None:
                continue
            p = tsub.add_parser(name, help=mod.HELP, description=mod.HELP)
            mod.configure(p)
            add_threads_option(p)
            p.set_defaults(_main=mod.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # argparse: unknown options -> usage line, exit 2
    try:
        if hasattr(args, "threads"):
            args.threads = apply_threads(args.threads)  # before any torch work (threads.py says why)
        return int(args._main(args) or 0)
    except (Exception, MemoryError) as exc:
        message = user_message(exc)
        if message is None:  # a bug: keep the traceback
            raise
        print(f"elbo-lab: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("elbo-lab: interrupted; finished results and the last checkpoint are on disk", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

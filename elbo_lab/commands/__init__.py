"""Subcommands of the ``elbo-lab`` CLI (see :mod:`elbo_lab.cli`)."""

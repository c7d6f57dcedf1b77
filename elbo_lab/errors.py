"""User-facing errors: the CLI prints their message on one line and exits 2 (no traceback)."""


class ElboLabError(Exception):
    """A problem with the user's input (data, options, checkpoint) -- reported as one line, exit status 2."""


class DataError(ElboLabError, ValueError):
    """Missing, malformed or out-of-range data."""


class CheckpointError(ElboLabError, ValueError):
    """A corrupt, foreign or incompatible checkpoint."""

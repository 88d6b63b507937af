"""Errors that privsplit raises on bad input.

Every error says what was wrong and what to do; the CLI prints the message
without a stack trace.
"""


class PrivsplitError(Exception):
    """Base class: a problem with the user's input, files or settings."""


class ConfigError(PrivsplitError, ValueError):
    """A configuration value, name or combination is not valid."""


class DataError(PrivsplitError):
    """A data folder is missing or not in the expected layout."""


class CheckpointError(PrivsplitError):
    """A checkpoint or run folder is missing, corrupt, or from another run."""


class TrainingDiverged(PrivsplitError):
    """A loss became NaN or infinite; the run keeps its last good checkpoint."""

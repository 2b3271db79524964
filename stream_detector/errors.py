"""Errors that are the user's to fix.

Anything raised as :class:`UserError` is shown by the CLI as one readable line (no
traceback): a wrong path, a file with NaNs, a model whose card does not match its ONNX
file.  Everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A mistake in input, configuration or environment that the operator can fix."""


class DataError(UserError):
    """A data file that cannot be used: missing, unreadable, NaNs, too short, wrong channels."""


class ModelLoadError(UserError):
    """A model directory that must not be loaded (missing files, bad card, SHA-256 mismatch)."""

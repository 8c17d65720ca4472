"""Errors a model backend raises, in its own terms: no HTTP types here.

The runner maps them to contract codes (``chat/run/upstream_errors.py``) and the HTTP layer to
statuses, so a backend never needs to know either.
"""

from __future__ import annotations


class ModelUnavailableError(Exception):
    """The model cannot take requests now: not loaded, closed, its process died, or full."""


class ModelFailedError(Exception):
    """The model failed on this request; the message is safe to show."""


class InputTooLongError(Exception):
    """The input does not fit the model; ``path`` names the request field, as in a 422."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message

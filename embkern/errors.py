"""Exceptions raised at embkern's boundary.

Every error a user can cause (a wrong path, a tensor that is not an embedding, a matrix too
large for the naive backend) is an :class:`EmbkernError` whose message names the input and
says what to do. The CLI prints the message alone, without a traceback.
"""

from __future__ import annotations


class EmbkernError(ValueError):
    """A problem with the user's input or request, with a message that says how to fix it."""


class InputError(EmbkernError):
    """A source that cannot be loaded as an embedding matrix (path, format, tensor, dtype)."""


class BackendError(EmbkernError):
    """A backend that cannot run this request (unavailable, or the problem does not fit)."""

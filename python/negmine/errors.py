"""negmine's exceptions. Each also derives from the builtin it refines, so callers can catch
either ``NegmineError`` or the usual ``ValueError`` / ``TypeError``."""

from __future__ import annotations


class NegmineError(Exception):
    """Base class of every error negmine raises itself."""


class FormatError(NegmineError, ValueError):
    """A file is not a valid embeddings file (magic, header, dtype, shape or size)."""


class InvalidArgumentError(NegmineError, ValueError):
    """An argument has a value negmine cannot work with (shape, k, ids, thresholds...)."""


class InvalidTypeError(NegmineError, TypeError):
    """An argument has a type or dtype negmine does not accept."""


class InvalidTextError(InvalidTypeError, ValueError):
    """A text that is not a ``str``, or holds a lone surrogate (not UTF-8 encodable). Both a
    ``TypeError``, as negmine's other type errors, and a ``ValueError``, as
    sentence-transformers raises for such a text (``mine_hard_negatives`` is a drop-in)."""


class DirectoryLockedError(NegmineError, RuntimeError):
    """An output directory is being written by another negmine run (its pid is in the
    message); two runs into one directory would mix their results."""


class DeviceMemoryError(NegmineError, MemoryError):
    """A torch device (``mine(..., backend="torch")``) ran out of memory; the message names the
    smaller ``tile_rows`` to use."""


class InternalError(NegmineError, RuntimeError):
    """A bug in negmine, caught before it could crash the interpreter; please report it."""


__all__ = [
    "DeviceMemoryError",
    "DirectoryLockedError",
    "FormatError",
    "InternalError",
    "InvalidArgumentError",
    "InvalidTextError",
    "InvalidTypeError",
    "NegmineError",
]

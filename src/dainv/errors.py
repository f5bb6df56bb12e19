"""One exception type for every problem a user can fix (bad path, corrupt file, invalid setting).

The CLI prints its message — what went wrong, where, how to fix it — and exits non-zero
without a traceback (unless ``--debug``). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["DainvError", "ConfigError", "DataError", "RunError"]


class DainvError(Exception):
    """A problem the user can fix; ``str(err)`` is the whole message."""

    exit_code = 2


class ConfigError(DainvError):
    """An invalid preset, config file, key or value."""


class DataError(DainvError):
    """Data missing, unreadable or not what it claims to be."""


class RunError(DainvError):
    """A run folder or checkpoint that cannot be used as asked (exists, locked, mismatched)."""

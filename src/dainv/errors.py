"""One exception type for every problem a user can fix: the CLI prints its message (what, where,
how to fix) without a traceback. Anything else is a bug and keeps its traceback."""

from __future__ import annotations

__all__ = ["DainvError", "ConfigError", "DataError", "RunError", "TimeLimitReached"]


class DainvError(Exception):
    """A problem the user can fix; ``str(err)`` is the whole message."""

    exit_code = 2
    prefix = "dainv: error: "


class ConfigError(DainvError):
    """An invalid preset, config file, key or value."""


class DataError(DainvError):
    """Data missing, unreadable or not what it claims to be."""


class RunError(DainvError):
    """A run folder or checkpoint that cannot be used as asked (exists, locked, mismatched)."""


class TimeLimitReached(DainvError):
    """Training stopped before ``--time-limit``, resumable: exit status 75 (run it again to go on)."""

    exit_code = 75
    #: printed before the message (not "dainv: error:"): a planned stop, not a fault
    prefix = "dainv: "

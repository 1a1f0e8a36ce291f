"""The one error type the ``icm`` command turns into a single line on stderr and exit code 2 (bad usage or bad
input: a missing video, a model folder without weights, a Hub id while offline, a bad recipe ...)."""

from __future__ import annotations


class CliError(Exception):
    """Bad usage or bad input. The message is one line that names the problem (file, field, value)."""

    exit_code = 2


__all__ = ["CliError"]

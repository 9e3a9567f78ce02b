"""How the command line reports a failure: by its class, never by guessing from a built-in type.

- `InputError` (cliplive.models.errors; MediaError, CheckpointError, ConfigError...): what the user gave
  is wrong: one line, exit status 2.
- `Unavailable` (EncoderUnavailable, ClipWriteError...) and OSError (disk full, permission denied):
  something the work needs cannot be had: one line, exit status 1.
- Anything else is a bug: one `internal error` line, its traceback logged (logger `cliplive`, ERROR:
  shown at every verbosity), exit status 1.
"""

from __future__ import annotations

from cliplive.models.errors import InputError, Unavailable, one_line

BAD_INPUT = 2
UNAVAILABLE = 1
INTERNAL = 1


def describe(error: BaseException) -> tuple[str, int | None]:
    """(one-line message, exit status); status None marks an internal error (a bug)."""
    message = one_line(error)
    if isinstance(error, InputError):
        return message, BAD_INPUT
    if isinstance(error, (Unavailable, OSError)):
        return message, UNAVAILABLE
    return f"{type(error).__name__}: {message}", None

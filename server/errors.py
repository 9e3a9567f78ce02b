"""Which failures are the user's input or environment (one line, no traceback) and which are bugs."""

from __future__ import annotations

from cliplive.models.encoder import EncoderUnavailable
from cliplive.models.scorer import CheckpointError
from cliplive.stream.source import MediaError

BAD_INPUT = 2
UNAVAILABLE = 1


def describe(error: BaseException) -> tuple[str, int | None]:
    """(one-line message, exit status); status None marks an internal error (a bug)."""
    from cliplive.server.cli import UserError
    from cliplive.stream.clips import ClipWriteError

    message = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, (UserError, MediaError, CheckpointError, ValueError)):
        return message, BAD_INPUT
    if isinstance(error, (EncoderUnavailable, ClipWriteError, OSError)):
        return message, UNAVAILABLE
    return f"internal error: {type(error).__name__}: {message} (run with -vv for the traceback)", None

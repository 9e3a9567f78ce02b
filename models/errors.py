"""The two kinds of failure that are not bugs, for every layer: what the user gave is wrong, or something
the work needs cannot be had. The CLI and the API map these two (and only these) to one-line messages;
any other exception is a bug: logged with its traceback, exit 1 or HTTP 500."""

from __future__ import annotations


class InputError(Exception):
    """Bad input (a file that is not a video, an empty sentence, a refused source): CLI exit 2, HTTP 4xx."""

    http_status = 400


class Unavailable(Exception):
    """A resource the work needs cannot be had now (model weights, a network input, disk space): CLI exit 1,
    HTTP 503."""

    http_status = 503


def reason(error: BaseException) -> str:
    """Why `error` happened, in a few words for the end of a one-line message: an OS or FFmpeg error's
    own text ("Connection refused", "Invalid data found when processing input": no errno, no path, which
    the message names already), else the first sentence of the first line, else the exception's type."""
    strerror = getattr(error, "strerror", None)
    if strerror:
        return str(strerror)
    lines = str(error).strip().splitlines()
    return lines[0].split(". ")[0][:160] if lines else type(error).__name__


def one_line(error: BaseException) -> str:
    """An error's message as one line (whitespace collapsed), or its class name when it has none."""
    return " ".join(str(error).split()) or type(error).__name__

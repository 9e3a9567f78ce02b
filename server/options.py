"""The command line's shared options and checks, for every command module (summarize, watch, serve, the
research commands). It imports none of them, and nothing heavy: building the parser stays cheap.

The encoder options are generated from `EncoderSpec`'s fields, so the CLI, the config file's `[encoder]`
table and the factory (`cliplive.models.spec`) cannot disagree about names, choices or defaults.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import typing
from dataclasses import MISSING, fields, replace
from pathlib import Path

from cliplive.models.errors import InputError
from cliplive.models.spec import EncoderSpec

# EncoderSpec field -> its option, where that is not --field-name; and its metavar, where not a choice.
OPTION_NAMES = {"kind": "--encoder"}
METAVARS = {"model": "NAME", "pretrained": "TAG|PATH", "checkpoint": "FILE", "max_batch": "N", "threads": "N"}
SCORER_FIELDS = ("checkpoint",)  # left out for commands that load no scorer (extract)


def add_query_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-s", "--sentence", dest="sentences", action="append", default=[], metavar="TEXT",
                   help="a sentence to look for (repeatable)")
    p.add_argument("--image", dest="images", action="append", default=[], metavar="IMG",
                   help="a reference image to look for (repeatable)")


def add_min_score_option(p: argparse.ArgumentParser, config_file: bool = False) -> None:
    """--min-score: the segmenter's absolute gate (`SegmenterConfig.min_score`), unset unless given."""
    default = "the config's [segmenter] min_score, else 0.5" if config_file else "0.5"
    p.add_argument("--min-score", type=fraction, metavar="P",
                   help="report a highlight only once its peak probability reaches P, so that what is absent stays "
                        f"silent; 0: the relative thresholds alone decide (default {default})")


def segmenter_options(args: argparse.Namespace) -> dict:
    """The segmenter options given on the command line, to lay over a `SegmenterConfig`."""
    return {} if args.min_score is None else {"min_score": args.min_score}


def option_name(field_name: str) -> str:
    return OPTION_NAMES.get(field_name, "--" + field_name.replace("_", "-"))


def add_encoder_options(p: argparse.ArgumentParser, scorer: bool = True, config_file: bool = False) -> None:
    """One option per `EncoderSpec` field (`--encoder` for `kind`), each unset unless given: `encoder_spec`
    lays the given ones over a base spec. `config_file`: the base is a config file's `[encoder]` table,
    which the options override."""
    about = "these override the config file's [encoder] table, whose defaults are the ones shown" if config_file else None
    group = p.add_argument_group("encoder", about)
    hints = typing.get_type_hints(EncoderSpec)
    for f in fields(EncoderSpec):
        if f.name in SCORER_FIELDS and not scorer:
            continue
        kwargs: dict = {"dest": f"encoder_{f.name}", "default": None, "metavar": METAVARS.get(f.name)}
        choices = typing.get_args(hints[f.name]) if typing.get_origin(hints[f.name]) is typing.Literal else None
        if choices:
            kwargs["choices"] = choices
        elif int in (hints[f.name], *typing.get_args(hints[f.name])):
            kwargs["type"] = bounded_int(f.metadata["min"], f.metadata["max"])
        default = f.default if f.default is not MISSING else None
        shown = f" (default {default})" if default is not None else ""
        group.add_argument(option_name(f.name), help=f.metadata["help"] + shown, **kwargs)


def encoder_spec(args: argparse.Namespace, base: EncoderSpec | None = None) -> EncoderSpec:
    """The encoder options given on the command line, laid over `base` (default: cliplive's defaults)."""
    given = {f.name: value for f in fields(EncoderSpec) if (value := getattr(args, f"encoder_{f.name}", None)) is not None}
    return replace(base or EncoderSpec(), **given)


def check_writable(path: str) -> None:
    """Fail before hours of work, not after: try to create a file where the output will go."""
    if path == "-":
        raise InputError("'-' (stdout) is only for JSON outputs (--json -): this output needs a file name")
    target = Path(path)
    if target.is_dir():
        raise InputError(f"output path is a directory: {path}")
    if not target.parent.is_dir():
        raise InputError(f"output directory does not exist: {target.parent}")
    try:
        with tempfile.TemporaryFile(dir=target.parent):
            pass
    except OSError as e:
        raise InputError(f"output path is not writable: {path} ({e.strerror})") from None


def positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def lookahead(unlimited: bool = False):
    """The parser of every command's --lookahead: seconds >= 0; with `unlimited`, also 'unlimited' (or 'inf'):
    the offline protocol, which only evaluate has a use for."""

    def parse(text: str) -> float:
        if unlimited and text.strip().lower() in ("unlimited", "inf"):
            return math.inf
        value = float(text)
        if not value >= 0 or (math.isinf(value) and not unlimited):
            allowed = ">= 0 seconds or 'unlimited'" if unlimited else ">= 0 seconds"
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text}")
        return value

    parse.__name__ = "lookahead"  # argparse names the type in its "invalid lookahead value" message
    return parse


def stream_name(text: str) -> str:
    """A stream's name, as the service's config allows it (letters, digits, '_', '.', '-'; 64 at most)."""
    import re

    from cliplive.server.config import STREAM_NAME

    if not re.match(STREAM_NAME, text):
        raise argparse.ArgumentTypeError(f"{text!r}: letters, digits, '_', '.' and '-' only, 64 at most, "
                                         "starting with a letter or digit")
    return text


def fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def bounded_int(low: int | None, high: int | None):
    def parse(text: str) -> int:
        value = int(text)
        if (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {text}")
        return value

    parse.__name__ = "integer"  # argparse names the type in its "invalid integer value" message
    return parse

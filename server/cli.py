"""The `cliplive` command line: one sink among the others (HTTP, WebRTC, webhooks).

This module only assembles the parser and reports failures (cliplive.server.errors); the commands live
in their own modules (summarize, watch, demo, serve, token_command, research), which share cliplive.server.options and
import nothing from here."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from pathlib import Path

from cliplive.server import research, serve, token_command
from cliplive.server.options import (add_encoder_options, add_min_score_option, add_query_options, fraction, lookahead,
                                     positive_float, stream_name)

# Third-party libraries print progress bars and banners on import; the CLI speaks for itself.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

log = logging.getLogger("cliplive")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("cliplive: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the one place that turns failures into one line
        from cliplive.server.errors import INTERNAL, describe

        message, status = describe(e)
        if status is None:  # a bug: the traceback always goes to the log, whatever the verbosity
            log.exception("internal error in `cliplive %s`", args.command)
            print(f"cliplive: internal error: {message}", file=sys.stderr)
            return INTERNAL
        print(f"cliplive: error: {message}", file=sys.stderr)
        return status


VERBOSE_HELP = "log more (-v info, -vv debug); before or after the command, the counts add up"


class Parser(argparse.ArgumentParser):
    """argparse, but a misspelled option is reported by the command it was given to (with that command's
    usage), not by the top-level parser; and `-v` counts wherever it is given."""

    def parse_args(self, args=None, namespace=None):
        parsed, extra = self.parse_known_args(args, namespace)
        if extra:
            commands = next((a for a in self._actions if isinstance(a, argparse._SubParsersAction)), None)
            command = getattr(parsed, "command", None)
            where = commands.choices.get(command, self) if commands and command else self
            where.error(f"unrecognized arguments: {' '.join(extra)}")
        if hasattr(parsed, "command_verbose"):
            parsed.verbose = getattr(parsed, "verbose", 0) + parsed.command_verbose
            del parsed.command_verbose
        return parsed


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("cliplive")
    except PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    """The commands and their options; each command's code is imported only when it runs."""
    parser = Parser(prog="cliplive", description="Language-guided video highlights, live and offline.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help=VERBOSE_HELP)
    parser.add_argument("--version", action="version", version=f"cliplive {version()}", help="print the version and exit")
    commands = parser.add_subparsers(dest="command", required=True)

    s = commands.add_parser("summarize", help="highlights / summary of a video file")
    s.add_argument("video", help="the video file to summarize")
    add_query_options(s)
    add_encoder_options(s)
    s.add_argument("--fps", type=positive_float, default=2.0, help="frames sampled per second (default 2)")
    s.add_argument("--budget", type=fraction, default=0.15, help="fraction of time kept (default 0.15); 0: fixed thresholds")
    s.add_argument("--lookahead", type=lookahead(), metavar="SECONDS",
                   help="decide as a live stream would, waiting at most this long (0: fully causal); default: with the whole file known")
    add_min_score_option(s)
    s.add_argument("--shots", action="store_true", help="the CLIP-It paper's rule instead: KTS shots of the aggregate score and a knapsack (whole file; no --lookahead)")
    s.add_argument("-o", "--output", metavar="FILE", help="write the summary video (mp4) here")
    s.add_argument("--json", metavar="FILE", help="write the highlights as JSON here ('-': stdout, the table then goes to stderr)")
    s.set_defaults(run=run_summarize)

    w = commands.add_parser("watch", help="live highlights from cameras, streams and files, as JSON lines")
    w.add_argument("sources", nargs="+", metavar="SOURCE",
                   help="rtsp://, rtsps://, rtsp-listen://HOST:PORT/PATH, http(s)://, .m3u8, /dev/videoN or a file")
    add_query_options(w)
    add_encoder_options(w)
    w.add_argument("--fps", type=positive_float, default=2.0, help="frames sampled per second per stream (default 2)")
    w.add_argument("--for", dest="duration", type=positive_float, help="stop after this many seconds")
    w.add_argument("--lookahead", type=lookahead(), default=0.0, metavar="SECONDS", help="seconds of lookahead (default 0: fully causal)")
    add_min_score_option(w)
    w.add_argument("--realtime", action="store_true", help="play files at real-time pace")
    w.add_argument("--transport", choices=("tcp", "udp"), default="tcp", help="RTSP transport (default tcp)")
    w.add_argument("--stall-timeout", type=positive_float, default=5.0, help="seconds without frames before reconnecting")
    w.add_argument("--metrics", type=positive_float, metavar="SECONDS", help="also emit a metrics event this often")
    w.add_argument("--name", dest="names", action="append", default=[], metavar="NAME", type=stream_name,
                   help="the stream's name in its events (repeatable: one per source, in order; default stream0, stream1, ...)")
    w.set_defaults(run=run_watch)

    d = commands.add_parser("demo", help="the embedded demo: real footage, known answers, no downloads")
    d.add_argument("-o", "--output", metavar="DIR", default="cliplive-demo",
                   help="the folder the montage, summary video and JSON go to (default cliplive-demo)")
    d.add_argument("--lookahead", type=lookahead(), default=0.0, metavar="SECONDS", help="seconds of lookahead (default 0: fully causal)")
    d.set_defaults(run=run_demo)

    serve.add_command(commands)
    token_command.add_command(commands)
    research.add_commands(commands)
    for command in commands.choices.values():  # -v after the command too
        command.add_argument("-v", "--verbose", dest="command_verbose", action="count", default=0, help=VERBOSE_HELP)
    return parser


def run_summarize(args: argparse.Namespace) -> int:
    from cliplive.server.summarize import run_summarize

    return run_summarize(args)


def run_watch(args: argparse.Namespace) -> int:
    import asyncio

    from cliplive.server.watch import watch

    return asyncio.run(watch(args))


def run_demo(args: argparse.Namespace) -> int:
    from cliplive.server.demo import run

    return run(Path(args.output), lookahead=args.lookahead)


def setup_logging(verbosity: int) -> None:
    """key=value lines on stderr; cliplive's own warnings by default, third-party chatter only at -vv."""
    level = logging.WARNING - 10 * min(verbosity, 2)
    logging.basicConfig(
        level=level if verbosity >= 2 else logging.CRITICAL,
        stream=sys.stderr,
        format="ts=%(asctime)s level=%(levelname)s logger=%(name)s msg=%(message)s",
    )
    logging.getLogger("cliplive").setLevel(level)
    warnings.showwarning = lambda message, category, *rest: print(f"cliplive: warning: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())

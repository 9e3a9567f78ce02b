"""The `cliplive` command line: one sink among the others (HTTP, WebRTC, webhooks)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from pathlib import Path

# Third-party libraries print progress bars and banners on import; the CLI speaks for itself.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class UserError(Exception):
    """Bad input: reported as one line, exit status 2."""


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
        from cliplive.server.errors import describe

        message, status = describe(e)
        if status is None and args.verbose >= 2:
            raise
        print(f"cliplive: error: {message}", file=sys.stderr)
        return status or 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cliplive", description="Language-guided video highlights, live and offline.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-v info, -vv debug)")
    commands = parser.add_subparsers(dest="command", required=True)

    s = commands.add_parser("summarize", help="highlights / summary of a video file")
    s.add_argument("video")
    add_query_options(s)
    add_encoder_options(s)
    s.add_argument("--fps", type=positive_float, default=2.0, help="frames sampled per second (default 2)")
    s.add_argument("--budget", type=fraction, default=0.15, help="fraction of time kept (default 0.15); 0: fixed thresholds")
    s.add_argument("--lookahead", type=non_negative_float, default=0.0, help="seconds of lookahead (default 0: fully causal)")
    s.add_argument("--shots", action="store_true", help="refine with KTS shots and a knapsack, as the CLIP-It paper does")
    s.add_argument("-o", "--output", help="write the summary video (mp4) here")
    s.add_argument("--json", help="write the highlights as JSON here ('-' for stdout)")
    s.set_defaults(run=run_summarize)

    w = commands.add_parser("watch", help="live highlights from cameras, streams and files, as JSON lines")
    w.add_argument("sources", nargs="+", metavar="SOURCE",
                   help="rtsp://, rtsps://, rtsp-listen://HOST:PORT/PATH, http(s)://, .m3u8, /dev/videoN or a file")
    add_query_options(w)
    add_encoder_options(w)
    w.add_argument("--fps", type=positive_float, default=2.0, help="frames sampled per second per stream (default 2)")
    w.add_argument("--for", dest="duration", type=positive_float, help="stop after this many seconds")
    w.add_argument("--lookahead", type=non_negative_float, default=0.0, help="seconds of lookahead (default 0: fully causal)")
    w.add_argument("--realtime", action="store_true", help="play files at real-time pace")
    w.add_argument("--transport", choices=("tcp", "udp"), default="tcp", help="RTSP transport (default tcp)")
    w.add_argument("--stall-timeout", type=positive_float, default=5.0, help="seconds without frames before reconnecting")
    w.add_argument("--metrics", type=positive_float, metavar="SECONDS", help="also emit a metrics event this often")
    w.set_defaults(run=run_watch)

    d = commands.add_parser("demo", help="the embedded demo: real footage, known answers, no downloads")
    d.add_argument("--out-dir", default="cliplive-demo", help="where the montage, summary video and JSON go")
    d.add_argument("--lookahead", type=non_negative_float, default=0.0)
    d.set_defaults(run=run_demo)

    from cliplive.server.research import add_commands
    from cliplive.server.serve import add_command

    add_command(commands)
    add_commands(commands)
    return parser


def add_query_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--query", action="append", default=[], metavar="TEXT", help="a sentence to look for (repeatable)")
    p.add_argument("--query-image", action="append", default=[], metavar="IMG", help="a reference image to look for (repeatable)")


def add_encoder_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--encoder", choices=("clip", "conse"), default="clip", help="clip (default) or conse (offline fallback)")
    p.add_argument("--model", default="ViT-B-32", help="open_clip model name or config .json (default ViT-B-32)")
    p.add_argument("--pretrained", default="openai", help="open_clip pretrained tag or local checkpoint path; 'random' only for tests")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="CLIP image tower precision (default auto: bf16 where the hardware has it natively)")
    p.add_argument("--checkpoint", help="a trained scorer checkpoint (default: zero-shot scorer)")


def make_encoder(args: argparse.Namespace):
    from cliplive.models.encoder import create_encoder

    if args.encoder == "clip":
        return create_encoder("clip", args.model, args.pretrained, precision=args.precision)
    return create_encoder("conse")


def make_scorer(args: argparse.Namespace, encoder):
    if not args.checkpoint:
        return None
    from cliplive.models import scorer

    return scorer.load(args.checkpoint, encoder_name=encoder.name, dim=encoder.dim)


def run_summarize(args: argparse.Namespace) -> int:
    from cliplive.server.progress import progress_bar
    from cliplive.stream.summarize import SummaryRequest, summarize, write_json

    from cliplive.models.encoder import check_query
    from cliplive.stream.source import FileSource

    # Everything the user can get wrong is checked before a model loads.
    for out in (args.output, args.json):
        if out and out != "-":
            check_writable(out)
    with FileSource(args.video):
        pass
    for text in args.query:
        check_query(text)
    for image in args.query_image:
        if not Path(image).is_file():
            raise UserError(f"query image not found: {image}")
    encoder = make_encoder(args)
    scorer = make_scorer(args, encoder)
    request = SummaryRequest(
        args.video, args.query, args.query_image, fps=args.fps, budget=args.budget, lookahead=args.lookahead, shots=args.shots
    )
    with progress_bar("scoring") as progress:
        result = summarize(request, encoder, scorer, progress)
    print_segments(result)
    if args.json == "-":
        import json

        print(json.dumps(result))
    elif args.json:
        write_json(result, args.json)
    if args.output:
        write_video(args.video, result["segments"], args.output)
    return 0


def write_video(video: str, segments: list[dict], out: str) -> None:
    from cliplive.server.progress import progress_bar
    from cliplive.stream.clips import write_summary

    if not segments:
        print("cliplive: no highlights, no summary video written", file=sys.stderr)
        return
    with progress_bar("writing") as progress:
        seconds = write_summary(video, [(s["start"], s["end"]) for s in segments], out, progress)
    print(f"summary video: {out} ({seconds:.1f} s)", file=sys.stderr)


def run_watch(args: argparse.Namespace) -> int:
    import asyncio

    from cliplive.server.watch import watch

    return asyncio.run(watch(args))


def run_demo(args: argparse.Namespace) -> int:
    from cliplive.server.demo import run

    return run(Path(args.out_dir), lookahead=args.lookahead)


def print_segments(result: dict) -> None:
    print(f"{result['video']}: {len(result['segments'])} highlights in {result['duration']:.1f} s "
          f"({result['realtime_factor']}x real time, encoder {result['encoder']})")
    for s in result["segments"]:
        print(f"  {s['start']:8.2f} - {s['end']:8.2f}  score {s['score']:.2f}  {s['query']}")


def check_writable(path: str) -> None:
    """Fail before hours of work, not after: try to create a file where the output will go."""
    import tempfile

    target = Path(path)
    if target.is_dir():
        raise UserError(f"output path is a directory: {path}")
    if not target.parent.is_dir():
        raise UserError(f"output directory does not exist: {target.parent}")
    try:
        with tempfile.TemporaryFile(dir=target.parent):
            pass
    except OSError as e:
        raise UserError(f"output path is not writable: {path} ({e.strerror})") from None


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


def fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


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

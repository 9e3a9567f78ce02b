"""`cliplive summarize`: highlights (and a summary video) of one file; the printing is shared with the demo.

Heavy imports happen when the command runs, so that building the CLI's parser stays cheap."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cliplive.models.errors import InputError
from cliplive.server.options import check_writable, encoder_spec


def run_summarize(args: argparse.Namespace) -> int:
    from cliplive.models.encoder import check_query
    from cliplive.models.spec import create_encoder, load_scorer
    from cliplive.server.progress import progress_bar
    from cliplive.stream.source import FileSource
    from cliplive.stream.summarize import SummaryRequest, summarize, write_json

    # Everything the user can get wrong is checked before a model loads.
    for out in (args.output, args.json):
        if out and out != "-":
            check_writable(out)
    with FileSource(args.video):
        pass
    for text in args.sentences:
        check_query(text)
    for image in args.images:
        if not Path(image).is_file():
            raise InputError(f"reference image not found: {image}")
    spec = encoder_spec(args)
    encoder = create_encoder(spec)
    scorer = load_scorer(spec, encoder)
    request = SummaryRequest(args.video, args.sentences, args.images, fps=args.fps, budget=args.budget,
                             lookahead=args.lookahead, shots=args.shots, batch_size=spec.max_batch)
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


def print_segments(result: dict) -> None:
    print(f"{result['video']}: {len(result['segments'])} highlights in {result['duration']:.1f} s "
          f"({result['realtime_factor']}x real time, encoder {result['encoder']})")
    for s in result["segments"]:
        print(f"  {s['start']:8.2f} - {s['end']:8.2f}  score {s['score']:.2f}  {s['query']}")

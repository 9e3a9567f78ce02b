"""`cliplive summarize`: highlights (and a summary video) of one file; the printing is shared with the demo.

Heavy imports happen when the command runs, so that building the CLI's parser stays cheap."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cliplive.models.errors import InputError
from cliplive.server.options import check_writable, encoder_spec, segmenter_options


def run_summarize(args: argparse.Namespace) -> int:
    from cliplive.models.encoder import check_sentence
    from cliplive.models.spec import create_encoder, load_scorer
    from cliplive.server.progress import notice, progress_bar
    from cliplive.stream.segmenter import SegmenterConfig
    from cliplive.stream.source import FileSource
    from cliplive.stream.summarize import SummaryRequest, summarize, write_json

    # Everything the user can get wrong is checked before a model loads.
    if args.output:
        check_writable(args.output)  # a video: never '-'
    if args.json and args.json != "-":
        check_writable(args.json)
    with FileSource(args.video):
        pass
    for text in args.sentences:
        check_sentence(text)
    for image in args.images:
        if not Path(image).is_file():
            raise InputError(f"reference image not found: {image}")
    spec = encoder_spec(args)
    request = SummaryRequest(args.video, args.sentences, args.images, fps=args.fps, budget=args.budget,
                             lookahead=args.lookahead, shots=args.shots, batch_size=spec.max_batch,
                             segmenter=SegmenterConfig(**segmenter_options(args)))
    notice(f"loading encoder {describe_spec(spec)} ...")
    encoder = create_encoder(spec)
    scorer = load_scorer(spec, encoder)
    with progress_bar("scoring") as progress:
        result = summarize(request, encoder, scorer, progress)
    # With --json -, stdout is exactly one JSON document: what is meant for a person goes to stderr.
    human = sys.stderr if args.json == "-" else sys.stdout
    print_segments(result, human)
    if args.json == "-":
        import json

        print(json.dumps(result, ensure_ascii=False))
    elif args.json:
        write_json(result, args.json)
    if args.output:
        write_video(args.video, result["segments"], args.output)
    return 0


def describe_spec(spec) -> str:
    """The encoder, as the loading notice names it."""
    return spec.kind if spec.kind == "conse" else f"{spec.kind} {spec.model}"


def write_video(video: str, segments: list[dict], out: str) -> None:
    from cliplive.server.progress import progress_bar
    from cliplive.stream.clips import write_summary

    if not segments:
        print("cliplive: no highlights, no summary video written", file=sys.stderr)
        return
    with progress_bar("writing") as progress:
        seconds = write_summary(video, [(s["start"], s["end"]) for s in segments], out, progress)
    print(f"summary video: {out} ({seconds:.1f} s)", file=sys.stderr)


def print_segments(result: dict, file=None) -> None:
    """The human table (stdout unless `file`); a generic summary first says which sentences it chose."""
    file = file or sys.stdout
    if result.get("pseudo_queries"):
        chosen = ", ".join(f'"{q}"' for q in result["pseudo_queries"])
        print(f"no sentences given: looking for {chosen} (the ImageNet classes that best describe the most frames; "
              "score: the class's probability among the 1000)", file=sys.stderr)
    count = len(result["segments"])
    print(f"{result['video']}: {count} highlight{'' if count == 1 else 's'} in {result['duration']:.1f} s "
          f"({result['realtime_factor']}x real time, encoder {result['encoder']})", file=file)
    for s in result["segments"]:
        print(f"  {s['start']:8.2f} - {s['end']:8.2f}  score {s['score']:.2f}  {s['query']}", file=file)

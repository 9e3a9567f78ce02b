"""`cliplive watch`: live streams in, one JSON event per line out (highlights, status, metrics)."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys

from cliplive.server.options import encoder_spec
from cliplive.stream.events import metrics_event


async def watch(args: argparse.Namespace) -> int:
    from cliplive.models.spec import create_encoder, load_scorer
    from cliplive.stream.engine import Queries
    from cliplive.stream.live import SourceOptions, source_kind
    from cliplive.stream.pipeline import Pipeline
    from cliplive.stream.segmenter import SegmenterConfig

    for source in args.sources:
        source_kind(source)  # bad source strings fail before any model loads
    spec = encoder_spec(args)
    encoder = create_encoder(spec)
    queries = Queries.build(encoder, args.sentences, args.images)
    options = SourceOptions(fps=args.fps, transport=args.transport, realtime=args.realtime, stall_timeout=args.stall_timeout)
    pipeline = Pipeline(encoder, print_event, load_scorer(spec, encoder), SegmenterConfig(lookahead=args.lookahead),
                        max_batch=spec.max_batch)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    for i, source in enumerate(args.sources):
        pipeline.add(f"stream{i}", source, queries, options)
    waiters = [loop.create_task(stop.wait()), loop.create_task(pipeline.wait())]
    if args.duration:
        waiters.append(loop.create_task(asyncio.sleep(args.duration)))
    if args.metrics:
        reporter = loop.create_task(report_metrics(pipeline, args.metrics))
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    await pipeline.stop()  # closes open segments: their `end` events come out here
    if args.metrics:
        reporter.cancel()
        print_event(metrics_event(pipeline.snapshot()))
    for waiter in waiters:
        waiter.cancel()
    return 0


async def report_metrics(pipeline, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        print_event(metrics_event(pipeline.snapshot()))


def print_event(event) -> None:
    line = event.to_json() if hasattr(event, "to_json") else json.dumps(event)
    sys.stdout.write(line + "\n")
    sys.stdout.flush()



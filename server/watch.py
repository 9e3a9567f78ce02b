"""`cliplive watch`: live streams in, one JSON event per line out (highlights, status, metrics)."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys

from cliplive.stream.events import metrics_event


async def watch(args: argparse.Namespace) -> int:
    from cliplive.server.cli import make_encoder, make_scorer
    from cliplive.stream.engine import Queries
    from cliplive.stream.live import SourceOptions, source_kind
    from cliplive.stream.runtime import Runtime
    from cliplive.stream.segmenter import SegmenterConfig

    for source in args.sources:
        source_kind(source)  # bad source strings fail before any model loads
    encoder = make_encoder(args)
    queries = Queries.build(encoder, args.query, args.query_image)
    options = SourceOptions(fps=args.fps, transport=args.transport, realtime=args.realtime, stall_timeout=args.stall_timeout)
    runtime = Runtime(encoder, queries, emit=print_event, scorer=make_scorer(args, encoder), source_options=options,
                      segmenter=SegmenterConfig(lookahead=args.lookahead))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    for i, source in enumerate(args.sources):
        runtime.add(source, name=f"stream{i}" if len(args.sources) > 1 else "stream0")
    waiters = [loop.create_task(stop.wait()), loop.create_task(runtime.wait())]
    if args.duration:
        waiters.append(loop.create_task(asyncio.sleep(args.duration)))
    if args.metrics:
        reporter = loop.create_task(report_metrics(runtime, args.metrics))
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    await runtime.stop()  # closes open segments: their `end` events come out here
    if args.metrics:
        reporter.cancel()
        print_event(metrics_event(runtime.metrics()))
    for waiter in waiters:
        waiter.cancel()
    return 0


async def report_metrics(runtime, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        print_event(metrics_event(runtime.metrics()))


def print_event(event) -> None:
    line = event.to_json() if hasattr(event, "to_json") else json.dumps(event)
    sys.stdout.write(line + "\n")
    sys.stdout.flush()



"""`cliplive watch`: live streams in, one JSON event per line out (highlights, status, metrics)."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys

from cliplive.models.errors import InputError
from cliplive.server.options import encoder_spec, segmenter_options
from cliplive.stream.events import metrics_event


async def watch(args: argparse.Namespace) -> int:
    from cliplive.models.spec import create_encoder, load_scorer
    from cliplive.server.progress import notice
    from cliplive.server.summarize import describe_spec
    from cliplive.stream.engine import Queries
    from cliplive.stream.live import SourceOptions, source_kind
    from cliplive.stream.pipeline import Pipeline
    from cliplive.stream.segmenter import SegmenterConfig

    names = stream_names(args.sources, getattr(args, "names", None))
    for source in args.sources:
        source_kind(source)  # bad source strings fail before any model loads
    spec = encoder_spec(args)
    notice(f"loading encoder {describe_spec(spec)} ...")
    encoder = create_encoder(spec)
    queries = Queries.build(encoder, args.sentences, args.images)
    options = SourceOptions(fps=args.fps, transport=args.transport, realtime=args.realtime, stall_timeout=args.stall_timeout)
    segmenter = SegmenterConfig(lookahead=args.lookahead, **segmenter_options(args))
    pipeline = Pipeline(encoder, print_event, load_scorer(spec, encoder), segmenter, max_batch=spec.max_batch)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    for name, source in zip(names, args.sources):
        pipeline.add(name, source, queries, options)
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


def stream_names(sources: list[str], names: list[str] | None) -> list[str]:
    """--name, one per source in order (already checked against the service's pattern); default streamN."""
    if not names:
        return [f"stream{i}" for i in range(len(sources))]
    if len(names) != len(sources):
        raise InputError(f"--name given {len(names)} time{'s' if len(names) != 1 else ''} for {len(sources)} "
                         f"source{'s' if len(sources) != 1 else ''}: give one per source, in order, or none")
    if len(set(names)) != len(names):
        raise InputError(f"--name: each stream needs its own name, got {', '.join(names)}")
    return names


def print_event(event) -> None:
    """Every line alike: one compact JSON object (events and metrics), UTF-8 as is."""
    data = event.to_dict() if hasattr(event, "to_dict") else event
    sys.stdout.write(json.dumps(data, separators=(",", ":"), ensure_ascii=False) + "\n")
    sys.stdout.flush()



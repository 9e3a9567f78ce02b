"""The one live pipeline: per-stream add / remove / new queries, observers, one event route, typed metrics."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from cliplive.stream.engine import Queries
from cliplive.stream.events import HighlightEvent, StatusEvent
from cliplive.stream.live import SourceOptions
from cliplive.stream.pipeline import Pipeline, ScoredFrame
from cliplive.stream.segmenter import SegmenterConfig

# Thresholds so low that a segment opens at once: random tiny-CLIP weights still give highlight events.
ALWAYS = SegmenterConfig(open_threshold=-50, close_threshold=-50, min_length=0.0, min_score=0.0)


async def test_observers_see_each_scored_frame_before_its_events_and_a_failing_one_is_contained(h264_with_audio, tiny_clip, caplog):
    order: list = []  # observed frames and emitted events, in the order they happened
    pipeline = Pipeline(tiny_clip, order.append, segmenter=ALWAYS)

    def broken(scored: ScoredFrame) -> None:
        raise RuntimeError("a tap's bug")

    queries = Queries.build(tiny_clip, ["a test pattern", "a dog"])
    runner = pipeline.add("cam", str(h264_with_audio), queries, SourceOptions(fps=4), observers=[broken, order.append])
    async with asyncio.timeout(30):
        await pipeline.wait()
        await pipeline.stop()

    frames = [o for o in order if isinstance(o, ScoredFrame)]
    assert len(frames) == runner.scored >= 24  # 6 s at 4 fps: the broken observer stopped nothing
    failures = [r for r in caplog.records if "observer" in r.getMessage()]
    assert len(failures) == 1 and failures[0].exc_info, "one traceback for a failing observer, not one per frame"
    assert {f.relevance.shape for f in frames} == {(2,)} and frames[0].queries == ["a test pattern", "a dog"]
    assert all(f.stream == "cam" and f.frame.image.shape[0] == tiny_clip.image_size for f in frames)
    np.testing.assert_allclose([np.linalg.norm(f.embedding) for f in frames], 1.0, atol=1e-6)  # float32 ulps
    seen: set[float] = set()
    highlights = 0
    for item in order:
        if isinstance(item, ScoredFrame):
            seen.add(item.frame.t)
        elif isinstance(item, HighlightEvent):
            highlights += 1
            assert item.best_frame_ts in seen, "an event named a frame its observers had not seen yet"
    assert highlights and [e.state for e in order if isinstance(e, StatusEvent)] == ["connecting", "live", "ended"]
    # A stream's last highlight events come before its `ended`: a consumer can stop reading at `ended`.
    assert isinstance(order[-1], StatusEvent) and order[-1].state == "ended"
    assert isinstance(order[-2], HighlightEvent) and order[-2].type == "end"
    assert max(e.end for e in order if isinstance(e, HighlightEvent) and e.type == "end") <= 6.0  # the file's end
    # Highlight events are placed on the wall clock by their frames (here a file read as fast as possible, so
    # media and wall time do not advance together): a segment's start is when its first frame was decoded,
    # on every one of its events.
    walls = {f.frame.t: f.frame.wall for f in frames}
    for event in (e for e in order if isinstance(e, HighlightEvent)):
        assert event.wall_start == pytest.approx(walls[event.start], abs=1e-6) and event.wall_time >= event.wall_start
        assert event.wall_end is None if event.end is None else event.wall_end >= event.wall_start


async def test_streams_are_added_removed_and_given_new_queries_one_at_a_time(h264_with_audio, tiny_clip):
    events: list = []
    pipeline = Pipeline(tiny_clip, events.append, segmenter=ALWAYS)
    paced = SourceOptions(fps=4, realtime=True)  # paced like a camera: still running while we act on it
    first = pipeline.add("a", str(h264_with_audio), Queries.build(tiny_clip, ["a test pattern"]), paced)
    second = pipeline.add("b", str(h264_with_audio), Queries.build(tiny_clip, ["a test pattern"]), paced)
    with pytest.raises(ValueError, match="exists already"):
        pipeline.add("a", str(h264_with_audio), Queries.build(tiny_clip, ["x"]), paced)
    async with asyncio.timeout(30):
        while first.scored < 4 or second.scored < 4:
            await asyncio.sleep(0.05)

        before = len(events)
        pipeline.set_queries("b", Queries.build(tiny_clip, ["a dog", "a cat"]))
        changed = [e for e in events[before:] if isinstance(e, HighlightEvent)]
        assert changed and {(e.stream, e.type, e.query) for e in changed} == {("b", "end", "a test pattern")}
        while second.scored < 8:
            await asyncio.sleep(0.05)
        assert {e.query for e in events if isinstance(e, HighlightEvent) and e.stream == "b"} >= {"a dog", "a cat"}

        await pipeline.remove("a")  # its open segment ends before remove() returns; "b" goes on
        a_highlights = [e for e in events if isinstance(e, HighlightEvent) and e.stream == "a"]
        assert a_highlights[-1].type == "end" and "ended" in [e.state for e in events if isinstance(e, StatusEvent) and e.stream == "a"]
        assert "a" not in pipeline.runners and second.task is not None and not second.task.done()
        scored = second.scored
        while second.scored < scored + 2:
            await asyncio.sleep(0.05)

        snapshot = pipeline.snapshot()
        assert [s.stream for s in snapshot.streams] == ["b"] and snapshot.streams[0].state == "live"
        assert snapshot.streams[0].scored >= scored + 2 and snapshot.streams[0].failed == 0
        assert snapshot.encoder.frames >= first.scored + scored and snapshot.encoder.batches >= 1
        await pipeline.stop()
    assert [e.type for e in events if isinstance(e, HighlightEvent) and e.stream == "b"][-1] == "end"

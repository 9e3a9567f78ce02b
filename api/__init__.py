"""cliplive's Python API: language-guided highlights of a video file, or of live streams.

    >>> import cliplive
    >>> summary = cliplive.summarize("match.mp4", ["a goal is scored"], encoder="conse")  # doctest: +SKIP
    >>> [(h.start, h.end, h.start_frame, h.end_frame) for h in summary.segments]  # doctest: +SKIP

`import cliplive` is cheap: torch, PyAV and the models load when a function that needs them is called.
This package is the top layer (tests/test_layers.py): it builds on `cliplive.models` and
`cliplive.stream` only, and adds no logic of its own beyond shaping their results.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from importlib import metadata
from os import PathLike
from typing import TYPE_CHECKING, Any, Union

from cliplive.models.spec import EncoderSpec, create_encoder as _create_encoder

if TYPE_CHECKING:
    from cliplive.models.encoder import Encoder
    from cliplive.models.zero_shot import FrameScorer
    from cliplive.stream.live import Source
    from cliplive.stream.segmenter import SegmenterConfig

try:
    __version__: str = metadata.version("cliplive")
except metadata.PackageNotFoundError:  # run from a checkout that was never installed
    __version__ = "0.0.0"

__all__ = ["EncoderSpec", "Highlight", "Summary", "create_encoder", "pipeline", "summarize", "watch", "__version__"]

EncoderChoice = Union["Encoder", EncoderSpec, str, None]
"""An encoder object, a spec, a kind ("clip" or "conse"), or None for the default spec."""


def create_encoder(spec_or_kind: EncoderSpec | str = EncoderSpec()) -> Encoder:
    """The encoder a spec (or a kind: "clip", "conse") names, loaded; see `cliplive.EncoderSpec`."""
    return _create_encoder(EncoderSpec(kind=spec_or_kind) if isinstance(spec_or_kind, str) else spec_or_kind)


def _encoder_and_scorer(encoder: EncoderChoice) -> tuple[Encoder, FrameScorer]:
    from cliplive.models.spec import load_scorer

    if encoder is None or isinstance(encoder, (str, EncoderSpec)):
        spec = EncoderSpec(kind=encoder) if isinstance(encoder, str) else encoder or EncoderSpec()
        model = _create_encoder(spec)
        return model, load_scorer(spec, model)
    return encoder, load_scorer(EncoderSpec(), encoder)  # no checkpoint: the zero-shot scorer


# --- summaries of files --------------------------------------------------------------------------


@dataclass(frozen=True)
class Highlight:
    """One highlight of a file: [start, end) in seconds, and the same span in the file's own frame
    numbering (frame = round(seconds * the file's average fps))."""

    start: float
    end: float
    start_frame: int
    end_frame: int  # exclusive, as `end`
    score: float  # peak probability over the highlight's frames
    query: str  # what it matches: a sentence, or "image:<path>"
    query_index: int
    best_frame_ts: float
    id: str


@dataclass(frozen=True)
class Summary:
    """The highlights of one file, as `cliplive summarize` finds them."""

    video: str
    segments: list[Highlight]
    duration: float  # seconds
    fps: float  # the file's average frame rate (what frame indices count)
    sampled_fps: float  # frames scored per second
    queries: list[str]
    frames: dict = field(repr=False)  # per sampled frame: t (s), score, relevance (one per query)
    _result: dict = field(repr=False, compare=False, default_factory=dict)

    def to_dict(self) -> dict:
        """The JSON `cliplive summarize --json` writes for the same file, queries and encoder."""
        return dict(self._result)


def summarize(
    video: str,
    sentences: Sequence[str] = (),
    images: Sequence[str] = (),
    *,
    budget: float | None = 0.15,
    fps: float = 2.0,
    lookahead: float | None = None,
    shots: bool = False,
    encoder: EncoderChoice = None,
    scorer: FrameScorer | None = None,
    segmenter: SegmenterConfig | None = None,
    progress: Callable[[float], None] | None = None,
) -> Summary:
    """Highlights of a video file matching `sentences` and/or reference `images` (none: sentences are
    derived from the video). `budget` is the fraction of the video kept (0 or None: fixed thresholds),
    `fps` the sampling rate. `lookahead`: None (default) decides with the whole file known; seconds (0:
    fully causal) replay the file as a live stream with that lookahead would. `shots`: the CLIP-It paper's
    own rule (KTS shots and a knapsack on the aggregate score). `scorer`: a loaded scorer to use instead of
    the encoder spec's (its checkpoint or the zero-shot scorer); `segmenter`: thresholds and the absolute
    gate `min_score` (default `SegmenterConfig()`); `progress` is called with the fraction done. Raises
    `cliplive.models.errors.InputError` for unusable input (a missing or unreadable file, an empty
    sentence, `shots` with a lookahead)."""
    from cliplive.stream.segmenter import SegmenterConfig
    from cliplive.stream.source import FileSource
    from cliplive.stream.summarize import SummaryRequest, summarize as summarize_request

    with FileSource(video) as source:  # a bad file fails before a model loads
        file_fps = source.info.fps
    request = SummaryRequest(str(video), list(sentences), [str(i) for i in images], fps=fps, budget=budget,
                             lookahead=lookahead, shots=shots, segmenter=segmenter or SegmenterConfig())
    model, spec_scorer = _encoder_and_scorer(encoder) if scorer is None else (_load(encoder), scorer)
    result = summarize_request(request, model, scorer or spec_scorer, progress)
    rate = file_fps or result["fps"]
    segments = [
        Highlight(s["start"], s["end"], round(s["start"] * rate), round(s["end"] * rate), s["score"], s["query"],
                  s["query_index"], s["best_frame_ts"], s["id"])
        for s in result["segments"]
    ]
    return Summary(result["video"], segments, result["duration"], rate, result["fps"], list(result["queries"]),
                   result["frames"], result)


# --- live streams --------------------------------------------------------------------------------


async def watch(
    sources: str | Source | Sequence[str | Source],
    sentences: Sequence[str] = (),
    images: Sequence[str] = (),
    *,
    fps: float = 2.0,
    encoder: EncoderChoice = None,
    lookahead: float = 0.0,
    realtime: bool = False,
    transport: str = "tcp",
    stall_timeout: float = 5.0,
    segmenter: SegmenterConfig | None = None,
) -> AsyncIterator[dict]:
    """Events of live sources (RTSP/HTTP URLs, files, devices; see `cliplive watch`), as the dicts that
    command prints: stream `status` events (connecting, live, ..., ended) and `highlight` events
    (new/update/end). Streams are named stream0, stream1, ... The iterator ends when every source has
    ended; leaving it early (`break`, `aclose()`) stops the streams. Local files are read as fast as
    they decode unless `realtime`.

        async for event in cliplive.watch("rtsp://cam/stream", ["a person at the door"]):
            if event["kind"] == "highlight" and event["type"] == "new":
                ...
    """
    from cliplive.stream.engine import Queries
    from cliplive.stream.live import SourceOptions, source_kind
    from cliplive.stream.pipeline import Pipeline
    from cliplive.stream.segmenter import SegmenterConfig

    sources = [sources] if isinstance(sources, str) or not isinstance(sources, Sequence) else list(sources)
    for source in sources:
        if isinstance(source, str):
            source_kind(source)  # bad source strings fail before a model loads
    model, scorer = await asyncio.to_thread(_encoder_and_scorer, encoder)
    queries = await asyncio.to_thread(Queries.build, model, sentences, images)
    config = replace(segmenter or SegmenterConfig(), lookahead=lookahead)
    events: asyncio.Queue[dict | None] = asyncio.Queue()
    pipeline = Pipeline(model, lambda event: events.put_nowait(event.to_dict()), scorer, config)
    options = SourceOptions(fps=fps, transport=transport, realtime=realtime, stall_timeout=stall_timeout)
    finished = None
    try:
        for i, source in enumerate(sources):
            pipeline.add(f"stream{i}", source, queries, options)

        async def end_when_done() -> None:
            await pipeline.wait()
            events.put_nowait(None)

        finished = asyncio.get_running_loop().create_task(end_when_done())
        while (event := await events.get()) is not None:  # None comes after the streams' last events
            yield event
    finally:
        await pipeline.stop()
        if finished is not None:
            finished.cancel()


# --- a ModelScope-style pipeline -----------------------------------------------------------------


def _timestamp(seconds: float) -> str:
    """hh:mm:ss.mmm, as ModelScope's video summarization pipelines write times."""
    minutes, s = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return "%02d:%02d:%06.3f" % (hours, minutes, s)


def pipeline(task: str = "language-guided-video-summarization", encoder: EncoderChoice = None,
             **options: Any) -> Callable[[Any], dict]:
    """A callable in the shape of ModelScope's CLIP-It pipeline (`Tasks.language_guided_video_summarization`):
    `p((video, sentences))` or `p(video)` returns `{"output": [{"frame": [first, last], "timestamps":
    [start, end], "score": s, "query": q}, ...]}`, frames inclusive in the file's numbering and
    timestamps "hh:mm:ss.mmm" of those frames (ModelScope's `summary_format`). `options` go to
    `cliplive.summarize` (budget, fps, lookahead, shots, segmenter); the encoder loads once, here."""
    if task not in ("language-guided-video-summarization", "video-summarization"):
        raise ValueError(f"unknown task {task!r}: cliplive does language-guided-video-summarization")
    model, scorer = _encoder_and_scorer(encoder)

    def run(inputs: Any) -> dict:
        video, sentences = (inputs, None) if isinstance(inputs, (str, PathLike)) else inputs
        summary = summarize(video, list(sentences or ()), encoder=model, scorer=scorer, **options)
        output = []
        for h in summary.segments:
            last = max(h.start_frame, h.end_frame - 1)
            output.append({"frame": [h.start_frame, last],
                           "timestamps": [_timestamp(h.start_frame / summary.fps), _timestamp(last / summary.fps)],
                           "score": h.score, "query": h.query})
        return {"output": output}

    return run


def _load(encoder: EncoderChoice) -> Encoder:
    if encoder is None or isinstance(encoder, (str, EncoderSpec)):
        return create_encoder(encoder or EncoderSpec())
    return encoder

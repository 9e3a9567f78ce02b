"""Offline: the streaming engine run over a whole file as fast as the machine allows.

Stages: decode + sample (a thread) -> batched encoding -> the causal scorer, frame by frame as a live
stream runs it -> decisions, one of two ways:

- offline (the default, `lookahead=None`): the whole file is known. Each query's logits are normalised
  against the file's frames that do not match it (not running statistics); without a budget, each query
  keeps the stretches that hold the close threshold and reach the open one somewhere (hysteresis both
  ways in time); with one, the budget is shared out among the queries, each up to the time it matches, and
  each query keeps its stretches above the lowest level whose kept time fits its share. A segment whose
  peak probability is below the gate (`SegmenterConfig.min_score`) is never kept: a query that matches
  nothing stays silent. On the demo montage this beats KTS shots + knapsack (`shots=True`, the CLIP-It
  paper's own rule, kept as such) at filling a budget with the right sentence, and needs no O(n^2) KTS.
  `shots=True` is the CLIP-It paper's own rule instead (the aggregate score's shots and knapsack).
- online (`lookahead` in seconds, 0 included): the online segmenter decides, exactly as a live stream of
  the file would; the segments are the ones its `end` events carry, never trimmed.

A generic summary (no query given) rescores its segments either way, from each frame's class probability
alone: a live stream given the same pseudo-queries could compute the same numbers; only the choice of the
pseudo-queries needs the whole file.
"""

from __future__ import annotations

import functools
import json
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from cliplive.models import shots as shot_tools
from cliplive.models.encoder import Encoder
from cliplive.models.errors import InputError
from cliplive.models.files import atomic_path
from cliplive.models.zero_shot import FrameScorer, ZeroShotScorer
from cliplive.stream.engine import Queries, score_frames
from cliplive.stream.events import Segment, segment_id
from cliplive.stream.segmenter import EPS, OnlineSegmenter, RunningStats, SegmenterConfig, passes_gate, probability
from cliplive.stream.source import FileSource, Frame, MediaError, Sampler, prefetch, sample

Progress = Callable[[float], None]
PSEUDO_QUERIES = 3  # sentences derived from the video itself when none is given
PSEUDO_QUERY_TEMPLATE = "a photo of a {}."
BUDGET_SEARCH_STEPS = 50  # bisection steps for the z level that fits a budget: far finer than z differences
SHARE_SEARCH_STEPS = 30  # bisection steps for the queries' share of a budget: far under a frame's duration


@dataclass
class SummaryRequest:
    video: str
    sentences: Sequence[str] = ()
    images: Sequence[str] = ()  # reference images to look for
    fps: float = 2.0
    budget: float | None = 0.15  # fraction of time kept; None or 0: fixed hysteresis thresholds
    lookahead: float | None = None  # None: decide with the whole file; seconds (0: fully causal): as a live stream
    shots: bool = False  # the CLIP-It paper's own rule: the aggregate score's shots and knapsack (whole file)
    pseudo_queries: int = PSEUDO_QUERIES  # how many to derive when no query is given
    batch_size: int = 16
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)

    def __post_init__(self):
        if self.shots and self.lookahead is not None:
            raise InputError("shots are chosen with the whole file known: --shots takes no --lookahead")


def summarize(
    request: SummaryRequest, encoder: Encoder, scorer: FrameScorer | None = None, progress: Progress | None = None
) -> dict:
    """Highlights of one file as a JSON-ready dict (see README: Summary JSON)."""
    started = time.perf_counter()
    times, embeddings, info = encode_video(request.video, encoder, request.fps, request.batch_size, progress)
    fps = min(request.fps, info.fps) if info.fps else request.fps  # as sampled: never above the file's rate
    if request.sentences or request.images:
        queries, class_probability = Queries.build(encoder, request.sentences, request.images), None
    else:
        queries, class_probability = pseudo_queries(encoder, embeddings, request.pseudo_queries)
    scorer = scorer or ZeroShotScorer(encoder.dim, encoder.calibration)
    config = replace(request.segmenter, lookahead=request.lookahead or 0.0, budget=request.budget or None)
    stream = Path(request.video).name
    duration = info.duration or (float(times[-1]) + 1.0 / fps)
    relevance, score = score_frames(scorer, queries, embeddings)  # as a live stream of the file scores them
    if request.shots:
        segments = shot_segments(times, embeddings, relevance, score, queries.labels, duration, fps, request.budget, stream)
    elif request.lookahead is None:
        segments = offline_segments(times, relevance, queries.labels, duration, config, stream)
    else:  # replayed, the file's end is known, as it is to any reader of the file: budgets hold over its duration
        segmenter = OnlineSegmenter(queries.labels, config, stream=stream, duration=duration, shot_prior=scorer.shot_prior)
        for t, frame_relevance, embedding in zip(times, relevance, embeddings):
            segmenter.push(t, frame_relevance, embedding)
        segmenter.close(duration)
        segments = [s.to_dict() for s in segmenter.segments]
    segments = within(segments, duration)
    if class_probability is not None:
        segments = rescore(segments, times, class_probability)
    elapsed = time.perf_counter() - started
    return {
        "video": str(request.video),
        "duration": round(duration, 3),
        "queries": queries.labels,
        "pseudo_queries": list(queries.labels) if class_probability is not None else [],
        "encoder": encoder.name,
        "fps": fps,
        "lookahead": request.lookahead,
        "budget": request.budget or None,
        "mode": "online" if request.lookahead is not None else "offline",
        "segments": segments,
        "frames": {
            "t": [round(float(t), 3) for t in times],
            "score": [round(float(s), 4) for s in score],
            "relevance": np.round(relevance, 4).tolist(),
        },
        "seconds": round(elapsed, 3),
        "realtime_factor": round(duration / elapsed, 2) if elapsed > 0 else None,
    }


def encode_video(
    video: str, encoder: Encoder, fps: float, batch_size: int = 16, progress: Progress | None = None
):
    """Sampled frame times (n,), embeddings (n, D) and the file's VideoInfo."""
    with FileSource(video) as source:
        info = source.info
        if info.fps and fps > info.fps:
            fps = info.fps
        times, embeddings = encode_sampled(sample(source, Sampler(fps), encoder.image_size), encoder, batch_size, progress, info.duration)
    if not len(times):
        raise MediaError(f"no video frames in {video} (zero-length or unreadable video)")
    return times, embeddings, info


def encode_sampled(
    frames: Iterable[Frame], encoder: Encoder, batch_size: int = 16, progress: Progress | None = None, duration: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Sampled frames -> their times (n,) and embeddings (n, D), encoded in batches while a thread decodes."""
    times: list[float] = []
    chunks: list[np.ndarray] = []
    batch: list[Frame] = []
    for frame in prefetch(frames):
        batch.append(frame)
        if len(batch) == batch_size:
            chunks.append(encoder.encode_frames([f.image for f in batch]))
            times.extend(f.t for f in batch)
            batch = []
            if progress and duration:
                progress(min(times[-1] / duration, 1.0))
    if batch:
        chunks.append(encoder.encode_frames([f.image for f in batch]))
        times.extend(f.t for f in batch)
    if progress and times:
        progress(1.0)
    return np.asarray(times), np.concatenate(chunks) if chunks else np.zeros((0, encoder.dim), np.float32)


def pseudo_queries(encoder: Encoder, embeddings: np.ndarray, count: int) -> tuple[Queries, np.ndarray]:
    """Pseudo-queries for a generic summary: the ImageNet class names that best describe most frames, and
    each frame's probability of each chosen class among all 1000, (n, k).

    Every frame is matched against "a photo of a {class}." for the 1000 ImageNet classes; the classes
    that are the best match for the most frames (distinct, most frequent first) become the sentences.
    This stands in for the captions CLIP-It generates for generic summaries. The probability is a softmax
    of the encoder's calibrated logits (its calibration scale times the cosine) over the whole vocabulary;
    a generic summary's segments are scored with it, since the chosen class is by construction the best
    match of many frames, so its sigmoid relevance saturates near 1 and says nothing.
    """
    from cliplive.models.conse import imagenet_class_names

    names = imagenet_class_names()
    vocabulary = encoder.encode_texts([PSEUDO_QUERY_TEMPLATE.format(n) for n in names])
    cosines = embeddings @ vocabulary.T
    best = cosines.argmax(axis=1)
    ranked = np.argsort(-np.bincount(best, minlength=len(names)), kind="stable")
    chosen = [int(i) for i in ranked[:count] if np.any(best == i)]
    texts = [PSEUDO_QUERY_TEMPLATE.format(names[i]) for i in chosen]
    logits = encoder.calibration[0] * cosines.astype(np.float64)
    logits -= logits.max(axis=1, keepdims=True)
    probability_ = np.exp(logits)
    probability_ /= probability_.sum(axis=1, keepdims=True)
    return Queries(texts, vocabulary[chosen]), probability_[:, chosen]


def rescore(segments: list[dict], times: np.ndarray, class_probability: np.ndarray) -> list[dict]:
    """A generic summary's segments: score = the peak, over the segment's frames, of its class's probability
    among the vocabulary (see pseudo_queries); best_frame_ts = where that peak is."""
    rescored = []
    for segment in segments:
        inside = np.flatnonzero((times >= segment["start"] - 1e-6) & (times < segment["end"] - 1e-6))
        if not len(inside):
            inside = np.array([int(np.abs(times - segment["best_frame_ts"]).argmin())])
        column = class_probability[inside, segment["query_index"]]
        best = inside[int(column.argmax())]
        rescored.append({**segment, "score": round(float(column.max()), 4), "best_frame_ts": round(float(times[best]), 3)})
    return rescored


def within(segments: list[dict], duration: float) -> list[dict]:
    """Segments cut at the file's end. The segmenter never ends an open segment before the last sampled
    frame, and a container's duration may stop short of it: no segment ends past the file's end."""
    end = round(duration, 3)
    return [{**s, "end": min(s["end"], end), "best_frame_ts": min(s["best_frame_ts"], end)}
            for s in segments if s["start"] < end]


def offline_segments(
    times: np.ndarray, relevance: np.ndarray, labels: list[str], duration: float, config: SegmenterConfig, stream: str
) -> list[dict]:
    """The summary with the whole file known (module docstring). Each query's logits are z against the
    file's frames that do not match it (`background_z`). Kept: the stretches that hold `close_threshold`
    and reach `open_threshold`; with a budget, each query's share of it (`budget_runs`). The gate drops a
    stretch whose peak probability stays under `config.min_score`. Ids count the segments from 1."""
    z = background_z(relevance, config)
    matches = probability(relevance)
    ends = np.maximum(np.append(times[1:], duration), times)  # a frame lasts until the next one (or the end)

    def runs_at(q: int, open_at: float, close_below: float) -> list[tuple[int, int, int]]:
        return [(q, start, stop) for start, stop in hysteresis_runs(z[:, q], times, ends, open_at, close_below, config)
                if matches[start:stop, q].max() >= config.min_score]

    if config.budget:  # open = close = a query's level: hysteresis would drop a stretch whole before its edges
        gated = passes_gate(relevance, config.min_score) if config.min_score > 0 else np.ones(relevance.shape, bool)
        runs = budget_runs(lambda q, level: runs_at(q, level, level), (ends - times) @ gated, z, times, ends,
                           config.budget * duration, (z.min() - 1.0, z.max() + 1.0))
    else:
        runs = [run for q in range(len(labels)) for run in runs_at(q, config.open_threshold, config.close_threshold)]
    segments = []
    for number, (q, start, stop) in enumerate(sorted(runs, key=lambda run: (run[1], run[0])), 1):
        best = start + int(matches[start:stop, q].argmax())
        segment = Segment(float(times[start]), float(ends[stop - 1]), float(matches[best, q]), labels[q], q,
                          float(times[best]), segment_id(stream, number))
        segments.append(segment.to_dict())
    return segments


def background_z(relevance: np.ndarray, config: SegmenterConfig) -> np.ndarray:
    """Each query's logits (n, Q) as z against the file's frames that do not match it (probability under the
    gate), blended with the online segmenter's prior (worth `config.prior_weight` frames), so that a file
    whose every frame matches is not judged against itself alone. Against the whole file instead, a sentence
    that matches a third of it is judged against its own matches too, and the edges of its stretch, where
    the encoder is still unsure, fall under the threshold (the demo montage's street: F1 0.90, 0.99 so). With
    the gate off (`min_score` 0) there is no absolute notion of a match: every frame counts."""
    matched = passes_gate(relevance, config.min_score)
    z = np.empty(relevance.shape)
    for q in range(relevance.shape[1]):
        stats = RunningStats(1, config.prior_mean, config.prior_std, config.prior_weight)
        for value in relevance[~matched[:, q], q]:
            stats.add(value[None])
        z[:, q] = stats.z(relevance[:, q : q + 1])[0][:, 0]
    return z


def hysteresis_runs(
    z: np.ndarray, times: np.ndarray, ends: np.ndarray, open_at: float, close_below: float, config: SegmenterConfig
) -> list[tuple[int, int]]:
    """[start, stop) frame runs of one query by the online segmenter's rules, both ways in time: a stretch
    where z holds `close_below` counts if it reaches `open_at` anywhere (a live stream cannot extend a
    segment backwards; a file can), joins the previous one across at most `config.merge_gap` seconds, and
    is kept if it lasts `config.min_length` seconds."""
    merged: list[tuple[int, int]] = []
    for start, stop in shot_tools.runs(z >= close_below):
        if z[start:stop].max() < open_at:
            continue
        if merged and times[start] - ends[merged[-1][1] - 1] <= config.merge_gap + EPS:
            merged[-1] = (merged[-1][0], stop)
        else:
            merged.append((start, stop))
    return [(start, stop) for start, stop in merged if ends[stop - 1] - times[start] >= config.min_length - EPS]


def budget_runs(
    runs_at: Callable[[int, float], list[tuple[int, int, int]]],
    matching: np.ndarray,
    z: np.ndarray,
    times: np.ndarray,
    ends: np.ndarray,
    seconds: float,
    levels: tuple[float, float],
) -> list[tuple[int, int, int]]:
    """Every query's `runs_at(q, level)`, the budget of `seconds` shared out among the queries.

    Each query gets an equal share, but no more than the seconds it matches (`matching`, per query), and
    what one leaves goes to the others; the shares are the largest whose kept time together (a second two
    queries share counts once) fits `seconds`. If all that every query matches fits with time to spare, the
    shares are equal, without that cap (a query's stretches then grow past what it matches, as a single
    query's do to fill its budget). A query's runs for a share are those at the least level between
    `levels` (all kept, nothing kept) whose kept time fits it, found by bisection: a higher level only ever
    shrinks or drops runs, so kept time falls, and it falls as a share shrinks."""

    lengths = ends - times

    def kept(runs: list[tuple[int, int, int]]) -> float:
        return float(lengths[covered_by(runs, len(times))].sum())

    @functools.cache
    def fitted(q: int, share: float) -> list[tuple[int, int, int]]:
        low, high = levels
        for _ in range(BUDGET_SEARCH_STEPS):
            middle = (low + high) / 2
            low, high = (low, middle) if kept(runs_at(q, middle)) <= share + EPS else (middle, high)
        return runs_at(q, high)

    def shared(share: float, caps: np.ndarray) -> dict[int, list[tuple[int, int, int]]]:
        return {q: fitted(q, float(min(share, cap))) for q, cap in enumerate(caps)}

    def together(by_query: dict[int, list[tuple[int, int, int]]]) -> list[tuple[int, int, int]]:
        return [run for q in sorted(by_query) for run in by_query[q]]

    caps = matching if kept(together(shared(seconds, matching))) > seconds + EPS else np.full(len(matching), seconds)
    low, high = 0.0, seconds
    for _ in range(SHARE_SEARCH_STEPS):
        middle = (low + high) / 2
        low, high = (middle, high) if kept(together(shared(middle, caps))) <= seconds + EPS else (low, middle)
    return extended(together(shared(low, caps)), caps, z, times, ends, seconds)


def covered_by(runs: list[tuple[int, int, int]], n: int) -> np.ndarray:
    """Which of n frames some run keeps (a frame two queries share is kept once)."""
    covered = np.zeros(n, dtype=bool)
    for _, start, stop in runs:
        covered[start:stop] = True
    return covered


def extended(runs: list[tuple[int, int, int]], caps: np.ndarray, z: np.ndarray, times: np.ndarray, ends: np.ndarray,
             seconds: float) -> list[tuple[int, int, int]]:
    """The runs grown a frame at a time into the frames next to them that no run keeps, while the kept time
    fits `seconds` and each query's fits its cap: the frame of the query that keeps the least so far first,
    then the frame of highest z. Kept time at a level moves in steps (a stretch appears whole, at least
    min_length long), so the shares of a budget can leave room that no level fills."""
    runs = list(runs)
    lengths = ends - times
    covered = covered_by(runs, len(times))
    room = seconds - float(lengths[covered].sum())
    served: defaultdict[int, float] = defaultdict(float)  # seconds each query keeps
    for q, start, stop in runs:
        served[q] += float(lengths[start:stop].sum())
    while True:
        edges = [(served[q], -z[frame, q], i, frame) for i, (q, start, stop) in enumerate(runs)
                 for frame in (start - 1, stop) if 0 <= frame < len(times) and not covered[frame]
                 and lengths[frame] <= min(room, caps[q] - served[q]) + EPS]
        if not edges:
            break
        _, _, i, frame = min(edges)
        q, start, stop = runs[i]
        runs[i] = (q, min(start, frame), max(stop, frame + 1))
        covered[frame] = True
        room -= float(lengths[frame])
        served[q] += float(lengths[frame])
    merged: list[tuple[int, int, int]] = []  # a query's two runs that grew to touch are one
    for q, start, stop in sorted(runs):
        if merged and merged[-1][0] == q and merged[-1][2] >= start:
            merged[-1] = (q, merged[-1][1], max(stop, merged[-1][2]))
        else:
            merged.append((q, start, stop))
    return merged


def shot_segments(
    times: np.ndarray,
    embeddings: np.ndarray,
    relevance: np.ndarray,
    score: np.ndarray,
    labels: list[str],
    duration: float,
    fps: float,
    budget: float | None,
    stream: str,
) -> list[dict]:
    """CLIP-It's summary: KTS shots, shot score = mean frame score, 0/1 knapsack at the budget. The
    segments have the online ones' keys; ids count the kept shots of `stream` from 1."""
    n = len(times)
    change_points = shot_tools.shot_change_points(embeddings, n / fps) if n > 2 else np.zeros(0, int)
    budget = budget or 0.15
    bounds = _split_long(shot_tools.shot_bounds(change_points, n), max(1, int(budget * n)))
    keep = shot_tools.select_shots(probability(score), bounds, budget)
    segments = []
    for number, (start, stop) in enumerate(shot_tools.runs(keep), 1):
        q = int(relevance[start:stop].mean(axis=0).argmax())
        best = start + int(relevance[start:stop, q].argmax())
        end = float(times[stop]) if stop < n else duration
        score = float(probability(relevance[start:stop, q].max()))
        segment = Segment(float(times[start]), end, score, labels[q], q, float(times[best]), segment_id(stream, number))
        segments.append(segment.to_dict())  # the online segments' shape, id included
    return segments


def _split_long(shots: np.ndarray, longest: int) -> np.ndarray:
    """Shots longer than the whole budget could never be chosen; cut them into equal parts that fit."""
    parts = []
    for start, end in shots:
        pieces = -(-(end - start) // longest)
        edges = np.linspace(start, end, pieces + 1).round().astype(int)
        parts.extend(zip(edges[:-1], edges[1:]))
    return np.array(parts, dtype=int).reshape(-1, 2)


def write_json(result: dict, path: str | Path) -> None:
    """Atomically: a reader never sees half a file, and a failed write leaves the old one."""
    data = json.dumps(result, indent=1)
    try:
        with atomic_path(path) as tmp:
            Path(tmp).write_text(data)
    except OSError as e:
        raise OSError(f"cannot write {path}: {e.strerror or e}") from None


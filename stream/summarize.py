"""Offline: the streaming engine run over a whole file as fast as the machine allows.

Stages: decode + sample (a thread) -> batched encoding -> causal scorer and online segmenter (the very
code a live stream runs) -> optional paper-style refinement (KTS shots + 0/1 knapsack) -> JSON, video.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from cliplive.models import shots as shot_tools
from cliplive.models.encoder import Encoder
from cliplive.models.files import atomic_path
from cliplive.models.scorer import CausalScorer, zero_shot
from cliplive.stream.engine import Highlighter, Queries
from cliplive.stream.events import Segment, segment_id
from cliplive.stream.segmenter import SegmenterConfig, probability
from cliplive.stream.source import FileSource, Frame, MediaError, Sampler, prefetch, sample

Progress = Callable[[float], None]
PSEUDO_QUERIES = 3  # sentences derived from the video itself when none is given
PSEUDO_QUERY_TEMPLATE = "a photo of a {}."


@dataclass
class SummaryRequest:
    video: str
    sentences: Sequence[str] = ()
    images: Sequence[str] = ()  # reference images to look for
    fps: float = 2.0
    budget: float | None = 0.15  # fraction of time kept; None or 0: fixed hysteresis thresholds
    lookahead: float = 0.0  # seconds; 0 = fully causal
    shots: bool = False  # refine with KTS shots and a knapsack, as the CLIP-It paper does
    pseudo_queries: int = PSEUDO_QUERIES  # how many to derive when no query is given
    batch_size: int = 16
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)


def summarize(
    request: SummaryRequest, encoder: Encoder, scorer: CausalScorer | None = None, progress: Progress | None = None
) -> dict:
    """Highlights of one file as a JSON-ready dict (see README: Summary JSON)."""
    started = time.perf_counter()
    times, embeddings, info = encode_video(request.video, encoder, request.fps, request.batch_size, progress)
    fps = min(request.fps, info.fps) if info.fps else request.fps  # as sampled: never above the file's rate
    if request.sentences or request.images:
        queries, class_probability = Queries.build(encoder, request.sentences, request.images), None
    else:
        queries, class_probability = pseudo_queries(encoder, embeddings, request.pseudo_queries)
    scorer = scorer or zero_shot(encoder.dim, encoder.calibration)
    config = replace(request.segmenter, lookahead=request.lookahead, budget=request.budget or None)
    engine = Highlighter(scorer, queries, config, stream=Path(request.video).name, keep_history=True)
    engine.push_embeddings(times, embeddings)
    duration = info.duration or (float(times[-1]) + 1.0 / fps)
    engine.close(duration)
    history = engine.history
    relevance = np.stack(history.relevance)
    if request.shots:
        segments = shot_segments(times, embeddings, relevance, np.asarray(history.score), queries.labels, duration, fps,
                                 request.budget, engine.segmenter.stream)
    else:
        segments = [s.to_dict() for s in engine.segmenter.segments]
    segments = within(segments, duration)
    if class_probability is not None:
        segments = rescore(segments, times, class_probability)
    if request.budget and not request.shots:  # shots are chosen within the budget already
        segments = fit_budget(segments, request.budget * duration)
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
        "mode": "shots" if request.shots else "online",
        "segments": segments,
        "frames": {
            "t": [round(float(t), 3) for t in times],
            "score": [round(float(s), 4) for s in history.score],
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


def fit_budget(segments: list[dict], seconds: float) -> list[dict]:
    """A causal segmenter can only aim at its budget (it cannot know what is still to come); a summary
    must keep it. Keep the best-scoring segments whole while they fit; the first that does not fit is
    cut down to the time left, centred on its best frame."""
    kept, left = [], seconds
    for segment in sorted(segments, key=lambda s: -s["score"]):
        length = segment["end"] - segment["start"]
        if length > left:
            if left < 0.5:  # less than a sampled frame's worth: a cut this short is noise
                break
            centre = min(max(segment["best_frame_ts"], segment["start"] + left / 2), segment["end"] - left / 2)
            segment = {**segment, "start": round(centre - left / 2, 3), "end": round(centre + left / 2, 3)}
            length = left
        kept.append(segment)
        left -= length
    return sorted(kept, key=lambda s: s["start"])


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


"""One stream's highlighter: embeddings -> causal scorer (sliding window) -> online segmenter -> events."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cliplive.models.encoder import Encoder, check_sentence
from cliplive.models.errors import InputError
from cliplive.models.zero_shot import FrameScorer
from cliplive.stream.events import HighlightEvent
from cliplive.stream.segmenter import OnlineSegmenter, SegmenterConfig


@dataclass
class Queries:
    """What to look for: sentences and reference images, each one key/value token for the scorer."""

    labels: list[str]
    embeddings: np.ndarray  # (Q, D) unit vectors
    # (2, Q) gain and offset that put each query's cosines on sentences' scale; None: all are sentences
    cosine_map: np.ndarray | None = None

    @classmethod
    def build(cls, encoder: Encoder, sentences: Sequence[str] = (), images: Sequence[str] = ()) -> Queries:
        sentences, images = list(sentences), [str(p) for p in images]
        parts = []
        if sentences:
            parts.append(encoder.encode_texts(sentences))
        if images:
            parts.append(encoder.encode_images(images))
        if not parts:
            raise InputError("no queries: give at least one sentence or reference image")
        labels = [check_sentence(t) for t in sentences] + [f"image:{p}" for p in images]
        cosine_map = image_cosine_map(encoder, len(sentences), len(images)) if images else None
        return cls(labels, np.concatenate(parts).astype(np.float32), cosine_map)


def image_cosine_map(encoder: Encoder, sentences: int, images: int) -> np.ndarray:
    """(2, Q) gain and offset per query: identity for the sentences, then for the reference images the map
    under which the encoder's sentence calibration gives its image calibration."""
    (scale, bias), (image_scale, image_bias) = encoder.calibration, encoder.image_calibration
    gain = [1.0] * sentences + [image_scale / scale] * images
    offset = [0.0] * sentences + [(image_bias - bias) / scale] * images
    return np.array([gain, offset], np.float32)


def score_frames(scorer: FrameScorer, queries: Queries, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every frame's relevance logits (n, Q) and aggregate score (n,), in order, as a live stream scores them."""
    state = scorer.init_state()
    scored = [scorer.score_frame(state, np.asarray(e, np.float32), queries.embeddings, queries.cosine_map) for e in embeddings]
    relevance = np.array([r for r, _ in scored], np.float64).reshape(len(scored), len(queries.labels))
    return relevance, np.array([s for _, s in scored], np.float64)


class Highlighter:
    def __init__(
        self,
        scorer: FrameScorer,
        queries: Queries,
        segmenter: SegmenterConfig = SegmenterConfig(),
        stream: str = "file",
        duration: float | None = None,  # media seconds, when the end is known (a file): budgets then hold over it
    ):
        self.scorer = scorer
        self.queries = queries
        self.state = scorer.init_state()
        self.segmenter = OnlineSegmenter(queries.labels, segmenter, stream=stream, duration=duration, shot_prior=scorer.shot_prior)

    def push(self, t: float, embedding: np.ndarray) -> tuple[np.ndarray, list[HighlightEvent]]:
        """Score one frame: its relevance logits (one per query) and the events it causes."""
        embedding = np.asarray(embedding, np.float32)
        relevance, _ = self.scorer.score_frame(self.state, embedding, self.queries.embeddings, self.queries.cosine_map)
        return relevance, self.segmenter.push(float(t), relevance, embedding)

    def push_embeddings(self, times: Sequence[float], embeddings: np.ndarray) -> list[HighlightEvent]:
        return [event for t, embedding in zip(times, embeddings) for event in self.push(t, embedding)[1]]

    def close(self, t_end: float | None = None) -> list[HighlightEvent]:
        return self.segmenter.close(t_end)

    def set_queries(self, queries: Queries) -> list[HighlightEvent]:
        """Look for other sentences from now on, without restarting the stream. Open segments end (their
        `end` events are returned) and the sliding window restarts, since its cached keys and values
        were computed under the old sentences."""
        events = self.segmenter.close(self.segmenter.last_time)
        self.queries = queries
        self.state = self.scorer.init_state()
        self.segmenter = OnlineSegmenter(queries.labels, self.segmenter.config, stream=self.segmenter.stream,
                                         duration=self.segmenter.duration, shot_prior=self.scorer.shot_prior)
        return events

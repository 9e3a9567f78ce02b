"""The evaluation protocols of the video-summarization and highlight-detection literature. Pure numpy.

- TVSum / SumMe (Zhang et al. 2016, DR-DSN and the repositories after it): scores predicted at the
  sampled frames (`picks`) are spread over every frame, shot score = mean frame score over the KTS shots
  (`change_points`), a 0/1 knapsack keeps 15% of the frames, and the F1 of frame overlap is taken against
  each annotator's summary: averaged over annotators for TVSum ("avg"), their maximum for SumMe ("max").
- Rank correlation (Otani et al., CVPR 2019): Kendall's tau and Spearman's rho between the predicted
  frame scores and each annotator's frame scores, averaged over annotators.
- QVHighlights highlight detection (Lei et al., NeurIPS 2021, the Moment-DETR evaluation): 2-second clips,
  saliency 0-4 from 3 annotators; a clip is positive for an annotator when its saliency reaches the
  threshold (4, "VeryGood", is the reported one). HIT@1: the top-scored clip is positive for at least one
  annotator. mAP: interpolated average precision per annotator, averaged over annotators and queries.
- Online latency: for each relevant moment of a stream, how long after its start the first `new` event
  about it was emitted.

Every score here is a fraction in [0, 1] (tables print F1, HIT@1 and mAP as percentages).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from cliplive.models.errors import InputError
from cliplive.models.shots import select_shots

BUDGET = 0.15  # the protocol keeps 15% of the frames
F1_MODES = ("avg", "max")  # TVSum averages over annotators, SumMe takes the best-matching one
QVHIGHLIGHTS_CLIP = 2.0  # seconds per clip
VERY_GOOD = 4  # QVHighlights saliency threshold of the reported HIT@1 and mAP


# --- TVSum / SumMe ---------------------------------------------------------------------------------


def upsample(step_scores: np.ndarray, picks: np.ndarray, n_frames: int) -> np.ndarray:
    """Scores at the sampled frames `picks` -> one score per frame: each frame takes the score of the last
    pick at or before it (frames before the first pick take the first pick's)."""
    index = np.searchsorted(np.asarray(picks), np.arange(n_frames), side="right") - 1
    return np.asarray(step_scores, dtype=np.float64)[np.clip(index, 0, None)]


def shot_bounds_from_change_points(change_points: np.ndarray) -> np.ndarray:
    """The community's (S, 2) inclusive [first, last] frame of each shot -> (S, 2) [start, end)."""
    bounds = np.asarray(change_points, dtype=int).reshape(-1, 2).copy()
    bounds[:, 1] += 1
    return bounds


def machine_summary(frame_scores: np.ndarray, change_points: np.ndarray, budget: float = BUDGET) -> np.ndarray:
    """The protocol's summary of one video: whole KTS shots chosen by knapsack within `budget` of the frames.

    Scores must not be negative (a knapsack never takes a shot of negative value): pass probabilities.
    """
    return select_shots(frame_scores, shot_bounds_from_change_points(change_points), budget)


def overlap_f1(machine: np.ndarray, user: np.ndarray) -> float:
    """F1 of frame overlap between two 0/1 summaries of the same frames (0 when nothing overlaps)."""
    machine, user = np.asarray(machine) > 0, np.asarray(user) > 0
    overlap = np.count_nonzero(machine & user)
    if overlap == 0:
        return 0.0
    precision, recall = overlap / np.count_nonzero(machine), overlap / np.count_nonzero(user)
    return 2 * precision * recall / (precision + recall)


def summary_f1(machine: np.ndarray, user_summary: np.ndarray, mode: str = "avg") -> float:
    """F1 of a 0/1 machine summary against each annotator's (A, n_frames) summary, combined by `mode`.

    A machine summary shorter than the annotations is padded with unselected frames, a longer one cut,
    as the reference code does.
    """
    if mode not in F1_MODES:
        raise InputError(f"F1 mode must be one of {F1_MODES}, not {mode!r}")
    user_summary = np.atleast_2d(user_summary)
    n = user_summary.shape[1]
    machine = _fit(machine, n)
    scores = [overlap_f1(machine, user) for user in user_summary]
    return float(np.mean(scores) if mode == "avg" else np.max(scores))


def evaluate_summary(
    step_scores: np.ndarray,
    picks: np.ndarray,
    n_frames: int,
    change_points: np.ndarray,
    user_summary: np.ndarray,
    mode: str = "avg",
    budget: float = BUDGET,
) -> float:
    """F1 of one video, start to end: scores at picks -> frame scores -> shots -> knapsack -> F1."""
    summary = machine_summary(upsample(step_scores, picks, n_frames), change_points, budget)
    return summary_f1(summary, user_summary, mode)


def rank_correlation(frame_scores: np.ndarray, user_scores: np.ndarray) -> tuple[float, float]:
    """(Kendall's tau-b, Spearman's rho) of predicted frame scores against each annotator's (A, n_frames)
    scores, averaged over annotators (Otani et al.). A correlation that is undefined because one side
    is constant counts as 0: a constant prediction ranks nothing."""
    taus, rhos = [], []
    for user in np.atleast_2d(user_scores):
        if np.ptp(frame_scores) == 0 or np.ptp(user) == 0:
            taus.append(0.0)
            rhos.append(0.0)
            continue
        taus.append(stats.kendalltau(frame_scores, user).statistic)
        rhos.append(stats.spearmanr(frame_scores, user).statistic)
    return float(np.mean(taus)), float(np.mean(rhos))


# --- QVHighlights ----------------------------------------------------------------------------------


def qvhighlights_saliency(
    duration: float, relevant_clip_ids: Sequence[int], saliency_scores: Sequence[Sequence[int]], clip_length: float = QVHIGHLIGHTS_CLIP
) -> np.ndarray:
    """(clips, annotators) saliency of every clip of the video: the annotated clips' scores, 0 elsewhere.
    The video has int(duration / clip_length) clips, as in the reference evaluation."""
    if not len(relevant_clip_ids):  # unlabelled (QVHighlights' test split): nothing is salient
        return np.zeros((int(duration / clip_length), 3))
    scores = np.asarray(saliency_scores, dtype=float).reshape(len(relevant_clip_ids), -1)
    full = np.zeros((int(duration / clip_length), scores.shape[1]))
    full[np.asarray(relevant_clip_ids, dtype=int)] = scores
    return full


def _fit(predicted: np.ndarray, n: int) -> np.ndarray:
    """Predictions for exactly n clips: cut, or padded with zeros (the reference's rule)."""
    predicted = np.asarray(predicted, dtype=float)[:n]
    return np.pad(predicted, (0, n - len(predicted)))


def hit_at_1(predicted: Sequence[np.ndarray], saliency: Sequence[np.ndarray], threshold: int = VERY_GOOD) -> float:
    """Fraction of queries whose top-scored clip (the first, on ties) has saliency >= threshold for at
    least one annotator. predicted[i]: per-clip scores of query i; saliency[i]: its (clips, annotators)."""
    hits = []
    for scores, gt in zip(predicted, saliency, strict=True):
        top = int(np.argmax(scores))
        hits.append(top < len(gt) and bool((gt[top] >= threshold).any()))
    return float(np.mean(hits))


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """Interpolated AP of 0/1 labels ranked by scores, as the QVHighlights evaluation computes it.

    Tied scores form one threshold. At each threshold that recalls new positives, the precision is
    interpolated (the best precision at that recall or beyond) and the AP is the mean of those. All-negative
    labels give 0, all-positive 1.
    """
    labels, scores = np.asarray(labels) > 0, np.asarray(scores, dtype=float)
    if labels.all() or not labels.any():
        return float(labels.all())
    order = np.argsort(-scores, kind="stable")
    labels, scores = labels[order], scores[order]
    last_of_tie = np.append(scores[1:] != scores[:-1], True)  # where each threshold's group ends
    true_positives = np.cumsum(labels)[last_of_tie]
    precision = true_positives / (np.flatnonzero(last_of_tie) + 1)
    interpolated = np.maximum.accumulate(precision[::-1])[::-1]
    recalls_more = np.diff(true_positives, prepend=0) > 0
    return float(interpolated[recalls_more].mean())


def highlight_map(predicted: Sequence[np.ndarray], saliency: Sequence[np.ndarray], threshold: int = VERY_GOOD) -> float:
    """Mean over queries and annotators of the AP of the clips positive for that annotator (saliency >=
    threshold), ranked by the predicted scores."""
    aps = []
    for scores, gt in zip(predicted, saliency, strict=True):
        scores = _fit(scores, len(gt))
        aps.extend(average_precision(gt[:, a] >= threshold, scores) for a in range(gt.shape[1]))
    return float(np.mean(aps))


# --- online latency --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Moment:
    """A relevant stretch of a stream: [start, end) seconds of media time, matching query `query_index`."""

    start: float
    end: float
    query_index: int = 0


@dataclass(frozen=True)
class Detection:
    """A `new` event: emitted when the stream's media clock read `emitted_at` (the time of the frame whose
    push produced it), about a segment of query `query_index` that began at `start`. `end` is the segment's
    final end once known (from its `end` event), exclusive; while None, the segment is known to cover
    [start, emitted_at]."""

    emitted_at: float
    start: float
    query_index: int = 0
    end: float | None = None


def detection_delays(moments: Sequence[Moment], detections: Sequence[Detection]) -> list[float | None]:
    """Per moment, seconds from its start to the first detection of the same query whose segment overlaps
    it; None when none does (missed). A segment announced before the moment began and lasting into it
    counts as no delay."""
    delays: list[float | None] = []
    for moment in moments:
        hits = [
            d.emitted_at
            for d in detections
            if d.query_index == moment.query_index
            and d.start < moment.end
            and (d.end > moment.start if d.end is not None else d.emitted_at >= moment.start)
        ]
        delays.append(max(min(hits) - moment.start, 0.0) if hits else None)
    return delays

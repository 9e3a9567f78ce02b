"""The protocol table of frame scores on stored features: F1, Kendall's tau and Spearman's rho per split and
their mean, at one or more lookaheads, and the online detection delay where relevant moments are known.

The frame scores are a scorer's (causal in every row: its score for the frame at t sees frames up to t)
or the annotators' own (`annotator_logits`: the oracle row, which measures the decision rule alone).
Lookahead means what it means to the online segmenter (stream/segmenter.py): with lookahead L seconds,
the decision about the frame at t may use frames up to t + L.

- L finite: each video's frame scores and features are pushed, in order, through the online segmenter in
  budget mode (15% of the time) with lookahead L, as a file replayed live is: decisions wait for at most L
  seconds of frames, and the segmenter knows the video's duration, so the kept time holds to the budget on
  every video (`segmenter.BUDGET_RANGE`). At L = 0 it decides frame by frame (a frame matches at probability
  0.5); at L > 0 by shots it cuts online from the features, ranking its first shots against a prior level where the row has
  one: a checkpoint's (`ShotPrior`, recorded by `train` from its training videos), and for the annotators'
  row the same record of the split's training videos' annotator scores (`shot_prior`). Its segments are
  the machine summary. With `live` the segmenter is not told the duration, as for a camera:
  the kept time is paced against the time elapsed.
  The absolute gate is off (min_score 0): every video of these benchmarks shows its query, and the rows
  compare scorers whose logits are calibrated differently, so a gate would measure calibration rather
  than decisions. Tau and rho rank the frame scores themselves (the segmenter does not change them).
  Delay: per relevant moment, seconds from its start to the segmenter's first `new` event about it
  (`protocol.detection_delays`).
- unlimited: the whole video is known: the published offline protocol (KTS shots, shot score = mean frame
  probability, 0/1 knapsack at 15%), so this row compares with the literature's numbers.

Files extracted with QVHighlights annotations are scored by that protocol instead (`evaluate_highlights`):
each query alone scores every sampled frame, a 2-second clip scores the mean of its frames, and HIT@1
and mAP are taken over the labelled queries (`protocol.hit_at_1`, `protocol.highlight_map`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from cliplive.models.errors import InputError
from cliplive.models.scorer import CausalScorer
from cliplive.research import protocol
from cliplive.research.dataset import Dataset, VideoRecord, video_queries
from cliplive.models.shots import ShotPrior, Shots
from cliplive.stream.segmenter import OnlineSegmenter, SegmenterConfig, probability

UNLIMITED = math.inf
ANNOTATOR_MARGIN = 0.01  # annotator scores of 0 or 1 map to the logits of 1% and 99%
PRIOR_LOOKAHEADS = (1.0, 2.0, 4.0, 8.0, 16.0)  # seconds at which a checkpoint records its training videos' shots


@dataclass
class VideoResult:
    f1: float
    tau: float  # nan where the video has no annotator scores
    rho: float
    delays: list[float | None]  # per relevant moment (online rows of videos whose moments are known)


@dataclass
class Row:
    split: int | str  # a split index, or "mean"
    lookahead: float  # seconds; math.inf = unlimited
    f1: float
    tau: float
    rho: float
    delay: float | None  # median seconds from a relevant moment's start to its first `new` event (mean row: mean of medians)
    detected: float | None  # fraction of relevant moments that got one

    def to_dict(self) -> dict:
        row = asdict(self)
        row["lookahead"] = "unlimited" if math.isinf(self.lookahead) else self.lookahead
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}


@torch.no_grad()
def frame_scores(scorer: CausalScorer, video: VideoRecord, queries: str = "auto") -> np.ndarray:
    """The scorer's aggregate logit for each sampled frame (one causal pass)."""
    out = scorer(torch.from_numpy(video.features), torch.from_numpy(video_queries(video, queries)))
    return out.score.numpy().astype(np.float64)


def annotator_logits(video: VideoRecord) -> np.ndarray:
    """The annotators' mean score at each sampled frame (`gtscore`, in [0, 1]) as a logit, so that its
    probability is the mean score again: log(p / (1 - p)), p kept within [1%, 99%]."""
    if video.gtscore is None:
        raise InputError(f"video {video.name} has no annotator scores (gtscore): extract with --annotations")
    p = np.clip(np.asarray(video.gtscore, dtype=np.float64), ANNOTATOR_MARGIN, 1 - ANNOTATOR_MARGIN)
    return np.log(p / (1 - p))


def online_summary(
    scores: np.ndarray, video: VideoRecord, lookahead: float, budget: float = protocol.BUDGET, live: bool = False,
    prior: ShotPrior | None = None,
) -> tuple[np.ndarray, list[protocol.Detection]]:
    """Run the online segmenter over one video's scores and features, as a replay of the video would (its
    duration known), or with `live` as a camera would (no known end), its first shots ranked against
    `prior`: (kept mask over the sampled frames, its detections)."""
    segmenter, announced = _replay(scores, video, SegmenterConfig(budget=budget, lookahead=lookahead, min_score=0.0), live, prior)
    ends = {s.id: s.end for s in segmenter.segments}
    keep = np.zeros(video.n_steps, dtype=bool)
    for s in segmenter.segments:
        keep |= (video.times >= s.start) & (video.times < s.end)
    return keep, [protocol.Detection(t, e.start, 0, ends.get(e.id)) for t, e in announced]


def video_shots(scores: np.ndarray, video: VideoRecord, lookahead: float) -> Shots:
    """The shots the online segmenter decides over one video's scores (replayed, by shots) at `lookahead`. A
    shot's value does not depend on the budget or on what was kept."""
    return _replay(scores, video, SegmenterConfig(budget=protocol.BUDGET, lookahead=lookahead, min_score=0.0))[0].shot_values


def shot_prior(scored: Sequence[tuple[np.ndarray, VideoRecord]], lookaheads: Sequence[float] = PRIOR_LOOKAHEADS) -> ShotPrior:
    """The shots of each of these videos' scores (a scorer's training videos), per lookahead: what a checkpoint
    records so that the streams its scorer scores rank their first shots against them."""
    return ShotPrior({float(lookahead): [video_shots(s, v, lookahead) for s, v in scored] for lookahead in lookaheads})


def _replay(scores: np.ndarray, video: VideoRecord, config: SegmenterConfig, live: bool = False, prior: ShotPrior | None = None):
    """The segmenter after one video's scores and features, and its `new` events with when they were
    announced."""
    times, duration = video.times, video.n_frames / video.fps
    segmenter = OnlineSegmenter(["summary"], config, duration=None if live else duration, shot_prior=prior)
    announced = []  # (emitted_at, event)
    for t, score, features in zip(times, scores, video.features):
        announced += [(t, e) for e in segmenter.push(t, np.array([score]), features) if e.type == "new"]
    announced += [(duration, e) for e in segmenter.close(duration) if e.type == "new"]
    return segmenter, announced


def score_video(
    scores: np.ndarray, video: VideoRecord, lookahead: float, mode: str, live: bool = False, prior: ShotPrior | None = None
) -> VideoResult:
    """One video's F1, tau, rho (and delays, online) from its per-frame logits, at one lookahead (`live`
    and `prior`: `online_summary`'s)."""
    if video.user_summary is None:
        raise InputError(f"video {video.name} has no annotations (user_summary): extract with --annotations")
    if math.isinf(lookahead):
        f1 = protocol.evaluate_summary(probability(scores), video.picks, video.n_frames, video.change_points, video.user_summary, mode)
        delays = []
    else:
        keep, detections = online_summary(scores, video, lookahead, live=live, prior=prior)
        f1 = protocol.summary_f1(protocol.upsample(keep, video.picks, video.n_frames) > 0, video.user_summary, mode)
        windows = video.relevant_windows if video.relevant_windows is not None else []
        delays = protocol.detection_delays([protocol.Moment(float(s), float(e)) for s, e in windows], detections)
    if video.user_scores is None:
        tau = rho = math.nan
    else:
        tau, rho = protocol.rank_correlation(protocol.upsample(scores, video.picks, video.n_frames), video.user_scores)
    return VideoResult(f1, tau, rho, delays)


def evaluate(
    dataset: Dataset,
    splits: Sequence[dict],
    logits_for_split: Callable[[int], Callable[[VideoRecord], np.ndarray]],
    lookaheads: Sequence[float] = (UNLIMITED,),
    mode: str | None = None,
    split_indices: Sequence[int] | None = None,
    live: bool = False,
    prior_for_split: Callable[[int], ShotPrior | None] = lambda index: None,
) -> list[Row]:
    """Rows per (lookahead, split) over each split's test videos, then a "mean" row per lookahead.

    logits_for_split(index) gives the split's frame scores of a video: a scorer's (`frame_scores` with
    that split's scorer) or `annotator_logits`; prior_for_split(index) the split's `ShotPrior` (a
    checkpoint's, or `shot_prior` of its training videos), if any. `live`: the online rows decide as a
    camera would, with no known end."""
    mode = mode or dataset.info.f1_mode
    indices = list(range(len(splits))) if split_indices is None else list(split_indices)
    rows = []
    for index in indices:
        frame_logits, prior = logits_for_split(index), prior_for_split(index)
        videos = dataset.select(splits[index]["test_keys"])
        logits = [frame_logits(v) for v in videos]
        for lookahead in lookaheads:
            rows.append(_row(index, lookahead, [score_video(s, v, lookahead, mode, live, prior) for s, v in zip(logits, videos)]))
    for lookahead in lookaheads:
        mine = [r for r in rows if r.lookahead == lookahead]
        found = [r.detected for r in mine if r.detected is not None]
        delays = [r.delay for r in mine if r.delay is not None]
        rows.append(
            Row("mean", lookahead, *(float(np.mean([getattr(r, k) for r in mine])) for k in ("f1", "tau", "rho")),
                float(np.mean(delays)) if delays else None, float(np.mean(found)) if found else None)
        )
    return rows


def _row(split: int, lookahead: float, results: list[VideoResult]) -> Row:
    delays = [d for r in results for d in r.delays]
    found = [d for d in delays if d is not None]
    return Row(
        split,
        lookahead,
        float(np.mean([r.f1 for r in results])),
        float(np.mean([r.tau for r in results])),
        float(np.mean([r.rho for r in results])),
        float(np.median(found)) if found else None,
        len(found) / len(delays) if delays else None,
    )


def format_lookahead(seconds: float) -> str:
    return "unlimited" if math.isinf(seconds) else f"{seconds:g} s"


def format_table(rows: Sequence[Row], title: str) -> str:
    """The table as text: F1 in percent, tau and rho, and the online delay where known."""
    lines = [title, f"{'lookahead':>10}  {'split':>5}  {'F1':>5}  {'tau':>6}  {'rho':>6}  {'delay':>7}  {'detected':>8}"]
    for r in sorted(rows, key=lambda r: (r.lookahead, r.split == "mean")):
        delay = "-" if r.delay is None else f"{r.delay:.1f} s"
        detected = "-" if r.detected is None else f"{100 * r.detected:.0f}%"
        correlation = "      -       -" if math.isnan(r.tau) else f"{r.tau:6.3f}  {r.rho:6.3f}"
        lines.append(f"{format_lookahead(r.lookahead):>10}  {r.split!s:>5}  {100 * r.f1:5.1f}  {correlation}  {delay:>7}  {detected:>8}")
    return "\n".join(lines)


# --- QVHighlights highlight detection --------------------------------------------------------------


@dataclass
class HighlightResult:
    hit_at_1: float
    map: float
    queries: int  # labelled queries scored
    threshold: int  # saliency a clip needs to count as positive


@torch.no_grad()
def clip_scores(scorer: CausalScorer, video: VideoRecord, query: int) -> np.ndarray:
    """Query `query` of the video alone scores each sampled frame (the aggregate logit); each 2-second clip
    of its saliency takes the mean over its frames, or the frame nearest its centre if it has none."""
    tokens = video_queries(video, "stored")[query : query + 1]
    scores = scorer(torch.from_numpy(video.features), torch.from_numpy(tokens)).score.numpy().astype(np.float64)
    n_clips = video.saliency.shape[1]
    clip = (video.times // protocol.QVHIGHLIGHTS_CLIP).astype(int)
    inside = clip < n_clips
    totals = np.bincount(clip[inside], weights=scores[inside], minlength=n_clips)
    counts = np.bincount(clip[inside], minlength=n_clips)
    centres = (np.arange(n_clips) + 0.5) * protocol.QVHIGHLIGHTS_CLIP
    nearest = scores[np.abs(video.times[None, :] - centres[:, None]).argmin(axis=1)]
    return np.where(counts > 0, totals / np.maximum(counts, 1), nearest)


def evaluate_highlights(dataset: Dataset, scorer: CausalScorer, threshold: int = protocol.VERY_GOOD) -> HighlightResult:
    """HIT@1 and mAP of the scorer over every labelled QVHighlights query of the file."""
    predicted, saliency = [], []
    for video in dataset.videos.values():
        for query, truth in enumerate(video.saliency if video.saliency is not None else []):
            if not np.isnan(truth).all():
                predicted.append(clip_scores(scorer, video, query))
                saliency.append(truth)
    if not saliency:
        raise InputError("no labelled QVHighlights queries in the features file (extract with --annotations "
                         "highlight_val_release.jsonl: the test split has no labels)")
    return HighlightResult(protocol.hit_at_1(predicted, saliency, threshold), protocol.highlight_map(predicted, saliency, threshold),
                           len(saliency), threshold)


def format_highlights(result: HighlightResult, title: str) -> str:
    """HIT@1 and mAP in percent, as the QVHighlights tables print them."""
    return "\n".join([title, f"{'queries':>8}  {'HIT@1':>6}  {'mAP':>6}",
                      f"{result.queries:>8}  {100 * result.hit_at_1:6.1f}  {100 * result.map:6.1f}"])

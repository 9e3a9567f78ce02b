"""How far any online decision rule can go on the synthetic benchmark, with the annotators' own scores.

The online rows of docs/reproduce.md are F1 against user summaries made the protocol's way: each annotator's
scores, averaged over KTS shots of the whole video, then a 0/1 knapsack of 15% that favours short shots
(value = a shot's mean score, weight = its length). This script measures rules that are given more than any
online rule has, so their F1 bounds what online decisions can reach:

- `relevant_frames`: keep exactly the frames the benchmark made relevant (perfect scores, frame by frame);
- `relevant_prefixes`: keep the first K seconds of each relevant stretch, the best K (what a rule that must
  decide at lookahead 0, without a stretch's end in sight, could do with perfect knowledge of relevance),
  and with each video's own best K, chosen in hindsight (`per_video`);
- `shots_over_level`: shots cut online (KTS over the last 20 s and 8 s ahead, as the segmenter cuts them),
  kept when their value per second is above the level at which the whole video's shots, best first, stop
  fitting the budget, known in hindsight (a threshold rule with a perfect level);
- `shots_knapsack`: the same shots by the greedy knapsack over the whole video (not a threshold rule);
- `offline_protocol`: the protocol's own summary of the annotators' mean scores (the "unlimited" row).

Prints JSON (mean F1 over the 20 videos, in %) with the machine it ran on; about 15 s.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine  # noqa: E402

from cliplive.models.shots import runs, shot_bounds, shot_change_points  # noqa: E402
from cliplive.research import protocol  # noqa: E402
from cliplive.research.dataset import synthetic_benchmark  # noqa: E402
from cliplive.research.evaluate import annotator_logits  # noqa: E402
from cliplive.stream.segmenter import SHOT_CONTEXT, probability  # noqa: E402

LOOKAHEAD = 8.0
PREFIXES = np.arange(1.0, 10.5, 0.5)  # seconds tried for relevant_prefixes


def f1(keep: np.ndarray, video) -> float:
    return protocol.summary_f1(protocol.upsample(keep, video.picks, video.n_frames) > 0, video.user_summary)


def online_shots(features: np.ndarray, fps: float, lookahead: float) -> np.ndarray:
    """(S, 2) [start, end) sampled-frame shots, each frame a cut when KTS over the window the segmenter
    sees at its decision (SHOT_CONTEXT seconds back, the lookahead ahead) starts a segment there."""
    back, ahead = int(SHOT_CONTEXT * fps), int(lookahead * fps)
    cuts = []
    for t in range(1, len(features)):
        start, stop = max(0, t - back), min(len(features), t + ahead + 1)
        if t - start in shot_change_points(features[start:stop], (stop - start) / fps):
            cuts.append(t)
    return shot_bounds(np.array(cuts, dtype=int), len(features))


def by_value(match: np.ndarray, shots: np.ndarray, budget: float, greedy: bool) -> np.ndarray:
    """Shots best value per second first: greedy, each that still fits the budget; else every shot above the
    level where the ranking stops fitting the budget (the value of the first shot that does not fit)."""
    lengths = shots[:, 1] - shots[:, 0]
    values = np.array([match[s:e].mean() / (e - s) for s, e in shots])
    keep, room = np.zeros(len(match), bool), budget * len(match)
    for i in np.argsort(-values, kind="stable"):
        if lengths[i] > room:
            if greedy:
                continue
            break
        keep[shots[i, 0] : shots[i, 1]] = True
        room -= lengths[i]
    return keep


def main() -> None:
    dataset = synthetic_benchmark()
    scores: dict[str, list[float]] = {"relevant_frames": [], "shots_over_level": [], "shots_knapsack": [], "offline_protocol": []}
    prefixes = np.zeros((len(dataset.videos), len(PREFIXES)))
    for v, video in enumerate(dataset.videos.values()):
        fps = 1.0 / float(np.median(np.diff(video.times)))
        match = probability(annotator_logits(video))
        relevant = np.zeros(video.n_steps, bool)
        for s, e in video.relevant_windows:
            relevant[round(s * fps) : round(e * fps)] = True
        stretches = runs(relevant)
        scores["relevant_frames"].append(f1(relevant, video))
        for k, seconds in enumerate(PREFIXES):
            prefix = np.zeros(video.n_steps, bool)
            for s, e in stretches:
                prefix[s : min(e, s + round(seconds * fps))] = True
            prefixes[v, k] = f1(prefix, video)
        shots = online_shots(video.features.astype(np.float64), fps, LOOKAHEAD)
        scores["shots_over_level"].append(f1(by_value(match, shots, protocol.BUDGET, greedy=False), video))
        scores["shots_knapsack"].append(f1(by_value(match, shots, protocol.BUDGET, greedy=True), video))
        scores["offline_protocol"].append(protocol.evaluate_summary(
            match, video.picks, video.n_frames, video.change_points, video.user_summary))
    best = int(prefixes.mean(axis=0).argmax())
    report = {name: round(100 * float(np.mean(values)), 1) for name, values in scores.items()}
    report["relevant_prefixes"] = {"f1": round(100 * float(prefixes[:, best].mean()), 1), "seconds": float(PREFIXES[best]),
                                   "per_video": round(100 * float(prefixes.max(axis=1).mean()), 1)}
    print(json.dumps({"benchmark": "decision_ceilings", "scores": "annotators", "lookahead_of_shots": LOOKAHEAD,
                      "f1_percent": report, "machine": machine()}, indent=1))


if __name__ == "__main__":
    main()

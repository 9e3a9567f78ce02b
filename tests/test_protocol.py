"""The evaluation protocols on hand-worked cases (the expected numbers are worked out in the comments)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cliplive.models.errors import InputError
from cliplive.research import dataset as ds
from cliplive.research import protocol
from cliplive.research.dataset import read_qvhighlights
from cliplive.research.evaluate import annotator_logits
from cliplive.research.protocol import Detection, Moment
from cliplive.server.cli import main
from cliplive.stream.segmenter import probability


def test_upsample_gives_each_frame_the_last_pick_at_or_before_it():
    np.testing.assert_array_equal(protocol.upsample([1, 2, 3], [0, 3, 6], 8), [1, 1, 1, 2, 2, 2, 3, 3])
    # Frames before the first pick take its score.
    np.testing.assert_array_equal(protocol.upsample([4, 5], [2, 5], 7), [4, 4, 4, 4, 4, 5, 5])


def test_change_points_are_inclusive_frame_ranges():
    np.testing.assert_array_equal(protocol.shot_bounds_from_change_points([[0, 2], [3, 7]]), [[0, 3], [3, 8]])


def test_overlap_f1():
    # Overlap 1 frame: precision 1/2, recall 1/2 -> F1 1/2.
    assert protocol.overlap_f1([1, 1, 0, 0], [0, 1, 1, 0]) == pytest.approx(0.5)
    # Precision 1/4, recall 1 -> F1 2 * 0.25 / 1.25 = 0.4.
    assert protocol.overlap_f1([1, 1, 1, 1], [1, 0, 0, 0]) == pytest.approx(0.4)
    assert protocol.overlap_f1([1, 0, 0], [0, 1, 0]) == 0.0
    assert protocol.overlap_f1([0, 0, 0], [0, 1, 0]) == 0.0


def test_summary_f1_averages_for_tvsum_and_takes_the_best_annotator_for_summe():
    users = np.array([[0, 1, 1, 0], [1, 1, 0, 0]])
    # Against user 0: F1 0.5 (as above); against user 1: identical, 1.0.
    assert protocol.summary_f1([1, 1, 0, 0], users, "avg") == pytest.approx(0.75)
    assert protocol.summary_f1([1, 1, 0, 0], users, "max") == pytest.approx(1.0)
    # Shorter machine summaries are padded with unselected frames, longer ones cut.
    assert protocol.summary_f1([1, 1, 0], users, "avg") == pytest.approx(0.75)
    assert protocol.summary_f1([1, 1, 0, 0, 1], users, "avg") == pytest.approx(0.75)
    with pytest.raises(InputError, match="F1 mode"):
        protocol.summary_f1([1], [[1]], "mean")


def test_evaluate_summary_from_scores_at_picks_to_f1():
    # 10 frames sampled every 2nd: frame scores .1 .1 .9 .9 .2 .2 .3 .3 .8 .8.
    # Shots [0,1] [2,3] [4,6] [7,9]: means .1, .9, (.2+.2+.3)/3 = .233, (.3+.8+.8)/3 = .633, lengths 2 2 3 3.
    # Budget 40% = 4 frames: shots {0, 1} (value 1.0) beat shot 1 alone (.9) and shot 3 alone (.633),
    # so the knapsack takes the weak shot 0 to fill the budget: frames 0-3.
    scores, picks = [0.1, 0.9, 0.2, 0.3, 0.8], [0, 2, 4, 6, 8]
    change_points = [[0, 1], [2, 3], [4, 6], [7, 9]]
    users = np.array([[1, 1, 1, 1, 0, 0, 0, 0, 0, 0], [0, 0, 1, 1, 0, 0, 0, 1, 1, 1]])
    summary = protocol.machine_summary(protocol.upsample(scores, picks, 10), change_points, budget=0.4)
    np.testing.assert_array_equal(np.flatnonzero(summary), [0, 1, 2, 3])
    # User 0: F1 1. User 1: overlap 2 frames, precision 2/4, recall 2/5 -> F1 2 * .5 * .4 / .9 = 4/9.
    assert protocol.evaluate_summary(scores, picks, 10, change_points, users, "avg", 0.4) == pytest.approx((1 + 4 / 9) / 2)
    assert protocol.evaluate_summary(scores, picks, 10, change_points, users, "max", 0.4) == pytest.approx(1.0)


def test_rank_correlation_averages_kendall_and_spearman_over_annotators():
    # [1,2,3,4] vs [1,2,4,3]: 5 concordant pairs, 1 discordant -> tau 4/6; rank differences 0,0,1,1 ->
    # rho = 1 - 6 * 2 / (4 * 15) = 0.8. Against the reversed ranking both are -1.
    tau, rho = protocol.rank_correlation(np.array([1, 2, 3, 4]), np.array([[1, 2, 4, 3]]))
    assert (tau, rho) == pytest.approx((4 / 6, 0.8))
    tau, rho = protocol.rank_correlation(np.array([1, 2, 3, 4]), np.array([[1, 2, 4, 3], [4, 3, 2, 1]]))
    assert (tau, rho) == pytest.approx(((4 / 6 - 1) / 2, (0.8 - 1) / 2))
    # Ties: tau-b. [1,1,2] vs [1,2,3]: 2 concordant, 0 discordant, one pair tied in the prediction ->
    # 2 / sqrt((3 - 1) * 3).
    assert protocol.rank_correlation(np.array([1, 1, 2]), np.array([[1, 2, 3]]))[0] == pytest.approx(2 / np.sqrt(6))
    # A constant prediction ranks nothing.
    assert protocol.rank_correlation(np.zeros(4), np.array([[1, 2, 3, 4]])) == (0.0, 0.0)


def test_qvhighlights_saliency_covers_every_two_second_clip():
    # 9 s -> int(9 / 2) = 4 clips; clips 1 and 2 annotated.
    full = protocol.qvhighlights_saliency(9.0, [1, 2], [[4, 2, 3], [1, 0, 4]])
    np.testing.assert_array_equal(full, [[0, 0, 0], [4, 2, 3], [1, 0, 4], [0, 0, 0]])


def test_qvhighlights_lines_read_with_saliency_over_the_whole_video(tmp_path):
    path = tmp_path / "highlight_val_release.jsonl"
    labelled = {"qid": 1, "query": "a man cooks", "duration": 8, "vid": "v1", "relevant_windows": [[2, 6]],
                "relevant_clip_ids": [1, 2], "saliency_scores": [[4, 2, 3], [1, 0, 4]], "unknown_field": 0}
    unlabelled = {"qid": 2, "query": "the test split has no labels", "duration": 4, "vid": "v2"}
    path.write_text(json.dumps(labelled) + "\n\n" + json.dumps(unlabelled) + "\n")
    first, second = read_qvhighlights(path)
    assert (first.qid, first.query, first.relevant_windows) == (1, "a man cooks", [[2, 6]])
    # 8 s = 4 clips of 2 s; clips 1 and 2 carry their three annotators' scores.
    np.testing.assert_array_equal(first.saliency(), [[0, 0, 0], [4, 2, 3], [1, 0, 4], [0, 0, 0]])
    np.testing.assert_array_equal(second.saliency(), np.zeros((2, 3)))
    path.write_text('{"qid": 3}\n')
    with pytest.raises(InputError, match=r"highlight_val_release.jsonl:1: not a QVHighlights record"):
        read_qvhighlights(path)


SALIENCY = np.array([[4, 2, 3], [1, 0, 4], [0, 0, 0]])


def test_hit_at_1_asks_whether_any_annotator_rates_the_top_clip_very_good():
    predictions = [
        np.array([0.2, 0.9, 0.1]),  # top clip 1: annotator 2 gave 4 -> hit
        np.array([0.9, 0.1, 0.2]),  # top clip 0: annotator 0 gave 4 -> hit
        np.array([0.1, 0.2, 0.9]),  # top clip 2: all 0 -> miss
        np.array([0.1, 0.2, 0.3, 0.9]),  # top clip 3 is beyond the video -> miss
    ]
    assert protocol.hit_at_1(predictions, [SALIENCY] * 4) == pytest.approx(0.5)
    # At threshold 3 ("Good") clip 0's 4 and clip 1's 4 still count; clip 2 still does not.
    assert protocol.hit_at_1(predictions[:3], [SALIENCY] * 3, threshold=3) == pytest.approx(2 / 3)


def test_average_precision_interpolates_and_groups_ties():
    # Ranked labels 1 0 1 0: precision 1 at the first hit, 2/3 at the second -> (1 + 2/3) / 2.
    assert protocol.average_precision([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]) == pytest.approx(5 / 6)
    # Ranked 0 1 1: precisions 1/2 and 2/3; interpolated, the first becomes 2/3 (better at higher recall).
    assert protocol.average_precision([0, 1, 1], [0.9, 0.8, 0.7]) == pytest.approx(2 / 3)
    # Clips 0 and 1 tie: one threshold recalling 1 of 2 at precision 1/2, then 2 of 2 at 2/3; interpolated 2/3, 2/3.
    assert protocol.average_precision([1, 0, 1], [0.5, 0.5, 0.1]) == pytest.approx(2 / 3)
    assert protocol.average_precision([0, 0], [0.1, 0.2]) == 0.0
    assert protocol.average_precision([1, 1], [0.1, 0.2]) == 1.0


def test_highlight_map_averages_annotators_and_queries():
    # Scores rank clips 1, 0, 2. Annotator 0 (positive: clip 0) -> AP 1/2; annotator 1 (none) -> 0;
    # annotator 2 (positive: clip 1) -> 1. Mean 0.5. Too short predictions are padded with 0.
    assert protocol.highlight_map([np.array([0.2, 0.9, 0.1])], [SALIENCY]) == pytest.approx(0.5)
    assert protocol.highlight_map([np.array([0.2, 0.9])], [SALIENCY]) == pytest.approx(0.5)
    assert protocol.highlight_map([np.array([0.2, 0.9, 0.1])] * 2, [SALIENCY, SALIENCY[[1, 0, 2]]]) == pytest.approx((0.5 + 0.5) / 2)


def _qvhighlights_video(name: str, fps: float, cosines: list[float], saliency: np.ndarray) -> ds.VideoRecord:
    """A video sampled at every frame whose frame t has cosine cosines[t] to its query token e0; a
    second, unlabelled query (token e2) rides along."""
    e = np.eye(8, dtype=np.float32)
    features = np.stack([c * e[0] + np.sqrt(1 - c * c) * e[1] for c in cosines]).astype(np.float32)
    n = len(cosines)
    video = ds.VideoRecord(name, features, np.arange(n), n, np.array([[0, n - 1]]), fps, query_features=e[[0, 2]],
                           queries=["labelled", "unlabelled"])
    video.saliency = np.stack([saliency, np.full(saliency.shape, np.nan)])
    return video


def test_evaluate_reports_qvhighlights_hit_at_1_and_map(tmp_path, capsys):
    # Video a: 1 fps, 8 s = 4 clips; clip means of the cosines .1 .9 .5 .3 rank clips 1, 2, 3, 0.
    # Top clip 1: annotator 1 gave it 4 -> hit. APs (positive: saliency 4): annotator 0 (clips 0, 2),
    # ranked labels 0 1 0 1 -> precisions 1/2, 2/4 -> 1/2; annotator 1 (clips 1, 2): 1 1 0 0 -> 1;
    # annotator 2 (clip 3): 0 0 1 0 -> 1/3. Mean 11/18.
    a = _qvhighlights_video("a", 1.0, [0.1, 0.1, 0.9, 0.9, 0.4, 0.6, 0.3, 0.3],
                            np.array([[4, 0, 0], [0, 4, 1], [4, 4, 0], [0, 0, 4]]))
    # Video b: 2 fps, 3 s of frames but 6 s long (3 clips): clip 0 .2, clip 1 (.4 + .6) / 2 = .5, clip 2
    # has no frame and takes the nearest one's (t = 2.5 s: .6). Top clip 2 has no 4 -> miss.
    # Ranked 2, 1, 0: annotator 0 (clip 0) -> 1/3, annotator 1 (clip 1) -> 1/2, annotator 2 (none) -> 0.
    b = _qvhighlights_video("b", 2.0, [0.2, 0.2, 0.2, 0.2, 0.4, 0.6], np.array([[4, 0, 0], [0, 4, 0], [3, 2, 1]]))
    features = tmp_path / "qvh.h5"
    ds.write_h5(features, ds.Dataset(ds.DatasetInfo("test:8d"), {"video_1": a, "video_2": b}))
    capsys.readouterr()
    assert main(["evaluate", "--data", str(features), "--protocol", "qvhighlights", "--json", "-"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["protocol"] == "qvhighlights" and report["queries"] == 2  # the unlabelled ones are left out
    assert report["hit_at_1"] == pytest.approx(1 / 2)
    assert report["map"] == pytest.approx((11 / 18 + 5 / 18) / 2)
    # The file's saliency selects the protocol; the table prints percentages.
    assert main(["evaluate", "--data", str(features)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].split() == ["2", "50.0", "44.4"]


def test_detection_delays_from_moment_start_to_first_overlapping_new_event():
    moments = [Moment(10, 20, 0), Moment(30, 40, 0), Moment(50, 60, 1)]
    detections = [
        Detection(emitted_at=9, start=8),  # [8, 9] ends before moment 0: not about it
        Detection(emitted_at=15, start=11),
        Detection(emitted_at=12.5, start=11),  # the first about moment 0: 2.5 s after it began
        Detection(emitted_at=29, start=25, end=35),  # announced before moment 1, lasts into it: no delay
        Detection(emitted_at=52, start=50, query_index=0),  # moment 2 is query 1's: missed
    ]
    assert protocol.detection_delays(moments, detections) == [2.5, 0.0, None]


def test_annotator_logits_are_the_mean_score_as_a_logit():
    video = ds.VideoRecord("v", np.zeros((4, 2), np.float32), np.arange(4), 4, np.array([[0, 3]]), 1.0)
    video.gtscore = np.array([0.0, 0.25, 0.5, 1.0])  # (mean score - 1) / 4 on TVSum's 1-5 scale
    # Their probability is the mean score again, kept within [1%, 99%] so that the logits stay finite.
    np.testing.assert_allclose(probability(annotator_logits(video)), [0.01, 0.25, 0.5, 0.99])
    video.gtscore = None
    with pytest.raises(InputError, match="no annotator scores"):
        annotator_logits(video)


def test_evaluate_scores_annotators_is_the_oracle_row(tmp_path, capsys):
    data, splits = str(tmp_path / "bench.h5"), str(tmp_path / "splits.json")
    assert main(["synthetic", "-o", data, "--splits", splits, "--videos", "5", "--steps", "80"]) == 0
    table = ["evaluate", "--data", data, "--split", splits, "--lookahead", "0", "--lookahead", "unlimited", "--json", "-"]
    reports = {}
    for scores in ("scorer", "annotators"):
        capsys.readouterr()
        assert main([*table, "--scores", scores]) == 0
        reports[scores] = json.loads(capsys.readouterr().out)
    assert (reports["scorer"]["scorer"], reports["annotators"]["scorer"]) == ("zero-shot", "annotators")
    mean = {name: {r["lookahead"]: r for r in report["rows"] if r["split"] == "mean"} for name, report in reports.items()}
    # The annotators' own scores, through the offline knapsack, come close to their own summaries.
    assert mean["annotators"]["unlimited"]["f1"] > max(0.7, mean["scorer"]["unlimited"]["f1"])
    # Online, the same scores go through the segmenter: its row has delays and detections like any other.
    assert mean["annotators"][0.0]["f1"] > 0 and mean["annotators"][0.0]["detected"] > 0.5
    # With the annotators' scores there is no scorer to load.
    assert main([*table[:-2], "--scores", "annotators", "--checkpoint", "x.pt"]) == 2
    assert "--scores annotators replaces the scorer" in capsys.readouterr().err
    # --live: the online rows decide as a camera would, not told the duration; the offline row stays.
    assert main([*table, "--scores", "annotators", "--live"]) == 0
    live = json.loads(capsys.readouterr().out)
    assert live["live"] is True and reports["annotators"]["live"] is False
    live_mean = {r["lookahead"]: r for r in live["rows"] if r["split"] == "mean"}
    assert live_mean["unlimited"] == mean["annotators"]["unlimited"] and live_mean[0.0] != mean["annotators"][0.0]

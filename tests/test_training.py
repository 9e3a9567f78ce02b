"""extract -> train -> evaluate, through the research commands: the synthetic benchmark end to end, and a
real (generated) video whose features, annotations and trained checkpoint go all the way to summarize."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from conftest import ffmpeg
from cliplive.research import dataset as ds
from cliplive.models import scorer as scorer_lib
from cliplive.research.evaluate import PRIOR_LOOKAHEADS
from cliplive.server.cli import main
from cliplive.stream.summarize import SummaryRequest, summarize


def cliplive(*argv: str) -> int:
    """The `cliplive` command, in this process (the models load once)."""
    return main(list(argv))


@pytest.fixture(scope="module")
def benchmark(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    assert cliplive("synthetic", "-o", str(root / "bench.h5"), "--splits", str(root / "splits.json")) == 0
    return root


def evaluate_json(capsys, *argv: str) -> dict:
    capsys.readouterr()
    assert cliplive("evaluate", *argv, "--json", "-") == 0
    report = json.loads(capsys.readouterr().out)
    return {(r["split"], r["lookahead"]): r for r in report["rows"]}


def test_trained_scorer_beats_zero_shot_on_the_synthetic_benchmark(benchmark, capsys):
    data, splits = str(benchmark / "bench.h5"), str(benchmark / "splits.json")
    for k in range(5):
        # --distill 0: one student per split (auto trains three networks; its own test is below)
        assert cliplive("train", "--data", data, "--split", splits, "--split-index", str(k), "--distill", "0",
                        "-o", str(benchmark / f"s{k}.pt")) == 0
    table = ["--data", data, "--split", splits, "--lookahead", "0", "--lookahead", "unlimited"]
    zero_shot = evaluate_json(capsys, *table)
    trained = evaluate_json(capsys, *table, "--checkpoint", str(benchmark / "s{split}.pt"))
    for lookahead in (0.0, "unlimited"):
        assert trained["mean", lookahead]["f1"] >= zero_shot["mean", lookahead]["f1"] + 0.05, (lookahead, trained, zero_shot)
    assert trained["mean", "unlimited"]["tau"] > zero_shot["mean", "unlimited"]["tau"]
    # Online rows report how late relevant moments are announced; offline rows cannot.
    assert trained["mean", 0.0]["delay"] >= 0 and 0 < trained["mean", 0.0]["detected"] <= 1
    assert trained["mean", "unlimited"]["delay"] is None
    # The text table has a row per split and lookahead plus the means.
    assert cliplive("evaluate", *table) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 + 2 * 6 and "unlimited   mean" in lines[-1]


def test_training_is_deterministic_and_checkpoints_say_how_they_were_made(benchmark):
    data, splits = str(benchmark / "bench.h5"), str(benchmark / "splits.json")
    args = ["--data", data, "--split", splits, "--epochs", "2", "--distill", "0.5"]
    for name in ("a.pt", "b.pt"):
        assert cliplive("train", *args, "-o", str(benchmark / name)) == 0
    a, b = (torch.load(benchmark / n, weights_only=True) for n in ("a.pt", "b.pt"))
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(value, b["state_dict"][key], rtol=0, atol=0)
    assert a["encoder"] == "synthetic:64d:seed0" and a["training"]["config"]["distill"] == 0.5
    # Its shots on the 16 videos it was given (split 0), at each lookahead a stream may rank its first shots at.
    assert a["shot_prior"] == b["shot_prior"] and sorted(a["shot_prior"]["shots"]) == list(PRIOR_LOOKAHEADS)
    assert all(len(videos) == 16 and all(len(shots) >= 5 for shots in videos) for videos in a["shot_prior"]["shots"].values())
    assert not torch.equal(a["state_dict"]["score_head.weight"], torch.zeros_like(a["state_dict"]["score_head.weight"]))


def test_distillation_is_kept_only_where_it_measures_better(benchmark, capsys):
    """By default the student is trained with and without the teacher, and the one with the better validation
    F1 at the lookahead asked for is kept: exactly the student an explicit --distill of that weight trains."""
    data, splits = str(benchmark / "bench.h5"), str(benchmark / "splits.json")
    args = ["--data", data, "--split", splits, "--split-index", "1", "--epochs", "3", "--lookahead", "2"]
    capsys.readouterr()
    assert cliplive("train", *args, "-o", str(benchmark / "auto.pt")) == 0
    said = capsys.readouterr().err
    auto = torch.load(benchmark / "auto.pt", weights_only=True)["training"]
    f1 = auto["distill_f1"]
    assert set(f1) == {"0", "1"} and auto["config"]["distill"] is None and auto["config"]["lookahead"] == 2.0
    assert auto["distill"] == (1.0 if f1["1"] > f1["0"] else 0.0)
    assert f"distillation at lookahead 2 s: validation F1 {100 * f1['0']:.1f} with weight 0, {100 * f1['1']:.1f} with weight 1" in said
    assert cliplive("train", *args, "--distill", f"{auto['distill']:g}", "-o", str(benchmark / "explicit.pt")) == 0
    kept, explicit = (torch.load(benchmark / n, weights_only=True)["state_dict"] for n in ("auto.pt", "explicit.pt"))
    for key, value in kept.items():
        torch.testing.assert_close(value, explicit[key], rtol=0, atol=0)


def test_bad_research_input_is_one_line_and_status_2(benchmark, tmp_path, capsys):
    data, splits = str(benchmark / "bench.h5"), str(benchmark / "splits.json")
    assert cliplive("evaluate", "--data", str(tmp_path / "none.h5"), "--split", splits) == 2
    assert cliplive("evaluate", "--data", data, "--split", splits, "--split-index", "7") == 2
    assert cliplive("extract", str(tmp_path / "missing.mp4"), "-o", str(tmp_path / "f.h5")) == 2
    assert cliplive("extract", str(tmp_path / "missing.mp4"), "-o", str(tmp_path / "f.h5"), "--splits", str(tmp_path / "s.json")) == 2
    errors = capsys.readouterr().err.splitlines()
    assert [line.split(":")[2].strip() for line in errors] == [
        "features file not found", "split index 7 out of range", "no such file", "--splits makes 5 train/test splits"]
    assert not (tmp_path / "f.h5").exists()


def test_synthetic_videos_follow_the_community_layout(benchmark):
    data = ds.read_h5(benchmark / "bench.h5")
    assert len(data.videos) == 20 and data.dim == 64 and data.info.f1_mode == "avg"
    for video in data.videos.values():
        assert video.features.shape == (200, 64) and video.n_frames == 200 * 15
        np.testing.assert_array_equal(video.picks, np.arange(0, 3000, 15))
        # Shots tile the frames; annotator summaries keep at most 15% of them.
        assert video.change_points[0, 0] == 0 and video.change_points[-1, 1] == video.n_frames - 1
        np.testing.assert_array_equal(video.change_points[1:, 0], video.change_points[:-1, 1] + 1)
        assert video.user_summary.shape == video.user_scores.shape == (5, 3000)
        assert (video.user_summary.sum(axis=1) <= 450).all() and video.gtscore.shape == (200,)
        assert video.query_features.shape == (3, 64) and len(video.relevant_windows)
    splits = ds.read_splits(benchmark / "splits.json")
    assert len(splits) == 5 and all(len(s["train_keys"]) == 16 and len(s["test_keys"]) == 4 for s in splits)
    assert all(set(s["train_keys"]).isdisjoint(s["test_keys"]) for s in splits)
    assert sorted(k for s in splits for k in s["test_keys"]) == sorted(data.videos)  # each video tested once


@pytest.fixture(scope="module")
def real_videos(tmp_path_factory):
    """Two 6 s, 25 fps clips (150 frames each) and a TVSum-style annotation file for them."""
    root = tmp_path_factory.mktemp("real")
    rng = np.random.default_rng(0)
    rows = []
    for name, pattern in (("pattern", "testsrc"), ("bars", "smptebars")):
        ffmpeg("-f", "lavfi", "-i", f"{pattern}=size=160x120:rate=25", "-t", "6", "-c:v", "libx264", "-pix_fmt", "yuv420p",
               str(root / f"{name}.mp4"))
        for _ in range(3):  # annotators: 1-5 per frame, higher in the middle of the clip
            scores = np.clip(np.round(1 + 3 * np.sin(np.linspace(0, np.pi, 150)) + rng.normal(0, 0.5, 150)), 1, 5)
            rows.append(f"{name}\tVT\t{','.join(str(int(s)) for s in scores)}")
    (root / "anno.tsv").write_text("\n".join(rows) + "\n")
    return root


def test_extract_train_summarize_on_real_video(real_videos, tiny_clip_config, tiny_clip, tmp_path):
    videos = [str(real_videos / "pattern.mp4"), str(real_videos / "bars.mp4")]
    tiny = ["--encoder", "clip", "--model", tiny_clip_config, "--pretrained", "random"]
    features = tmp_path / "features.h5"
    assert cliplive("extract", *videos, "-o", str(features), *tiny, "-s", "a test pattern",
                    "--annotations", str(real_videos / "anno.tsv")) == 0
    with h5py.File(features) as f:
        assert f.attrs["encoder"] == tiny_clip.name and "torch" in f.attrs["encoder_version"]
        assert sorted(f) == ["video_1", "video_2"]
        g = f["video_1"]
        assert g["video_name"][()].decode() == "pattern" and g["n_frames"][()] == 150 and g["n_steps"][()] == 10
        np.testing.assert_array_equal(g["picks"], np.arange(0, 150, 15))
        assert g["features"].shape == (10, 32) and g["query_features"].shape == (1, 32)
        cps = np.asarray(g["change_points"])
        assert cps.shape[1] == 2 and cps[0, 0] == 0 and cps[-1, 1] == 149
        np.testing.assert_array_equal(g["n_frame_per_seg"], cps[:, 1] - cps[:, 0] + 1)
        assert g["gtscore"].shape == (10,) and g["user_summary"].shape == g["user_scores"].shape == (3, 150)
    # At 2 fps instead: a pick every 12.5 frames on average.
    assert cliplive("extract", videos[0], "-o", str(tmp_path / "fps.h5"), *tiny, "-s", "a", "--fps", "2") == 0
    assert len(ds.read_h5(tmp_path / "fps.h5").videos["video_1"].picks) == 12

    checkpoint = tmp_path / "scorer.pt"
    assert cliplive("train", "--data", str(features), "-o", str(checkpoint), "--epochs", "3") == 0
    scorer = scorer_lib.load(str(checkpoint), encoder_name=tiny_clip.name, dim=tiny_clip.dim)
    request = SummaryRequest(videos[0], sentences=["a test pattern"])
    trained, untrained = summarize(request, tiny_clip, scorer=scorer), summarize(request, tiny_clip)
    assert trained["frames"]["t"] == untrained["frames"]["t"] and len(trained["frames"]["t"]) == 12
    assert trained["frames"]["score"] != untrained["frames"]["score"]  # the trained weights are what scored


def test_extract_joins_qvhighlights_queries_and_evaluate_scores_them(real_videos, tiny_clip_config, tmp_path, capsys):
    # QVHighlights names videos by vid (the file stem); each line is one query with its 2-second clips' saliency.
    lines = [{"qid": 1, "query": "a test pattern", "duration": 6, "vid": "pattern", "relevant_clip_ids": [1, 2],
              "saliency_scores": [[4, 3, 4], [2, 4, 1]]},
             {"qid": 2, "query": "colour bars", "duration": 6, "vid": "pattern"}]  # unlabelled, as in the test split
    annotations = tmp_path / "highlight_val_release.jsonl"
    annotations.write_text("".join(json.dumps(line) + "\n" for line in lines))
    tiny = ["--encoder", "clip", "--model", tiny_clip_config, "--pretrained", "random"]
    features = tmp_path / "qvh.h5"
    assert cliplive("extract", str(real_videos / "pattern.mp4"), str(real_videos / "bars.mp4"), "-o", str(features), *tiny,
                    "--fps", "2", "--annotations", str(annotations)) == 0
    data = ds.read_h5(features)
    pattern, bars = data.videos["video_1"], data.videos["video_2"]
    assert pattern.queries == ["a test pattern", "colour bars"] and pattern.query_features.shape == (2, 32)
    np.testing.assert_array_equal(pattern.saliency[0], [[0, 0, 0], [4, 3, 4], [2, 4, 1]])
    assert np.isnan(pattern.saliency[1]).all() and bars.saliency is None  # bars is not in the file
    assert data.protocol == "qvhighlights"
    capsys.readouterr()
    assert cliplive("evaluate", "--data", str(features), "--json", "-") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["protocol"] == "qvhighlights" and report["queries"] == 1 and 0 <= report["map"] <= 1
    # The file's sentences are the queries: -s would contradict them.
    assert cliplive("extract", str(real_videos / "pattern.mp4"), "-o", str(tmp_path / "q.h5"), *tiny, "-s", "x",
                    "--annotations", str(annotations)) == 2
    assert "drop -s" in capsys.readouterr().err

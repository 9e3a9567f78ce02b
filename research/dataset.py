"""Datasets: the community's h5 feature layout, the public annotation files, splits, a synthetic benchmark.

The h5 layout is the one the TVSum/SumMe literature shares (DR-DSN, VASNet, DSNet, PGL-SUM), one group
per video (`video_1`, `video_2`, ...):

    features         (n_steps, D)    embeddings of the sampled frames
    picks            (n_steps,)      frame index of each sampled frame (every 15th frame, or a given fps)
    n_frames, n_steps                scalars
    change_points    (S, 2)          KTS shots as inclusive [first, last] frame indices
    n_frame_per_seg  (S,)            frames per shot
    gtscore          (n_steps,)      mean annotator importance at the picks, in [0, 1]
    user_summary     (A, n_frames)   each annotator's 0/1 summary
    video_name                       the source file's stem (the key annotations are joined by)

cliplive adds, all optional: `user_scores` (A, n_frames), each annotator's raw frame scores (the rank
correlations need them); `query_features` (Q, D) with the sentences in the group attribute `queries` (JSON);
`relevant_windows` (M, 2), known relevant stretches in seconds (the online-latency metric needs them);
`saliency` (Q, clips, annotators), QVHighlights' 0-4 saliency of each 2-second clip for each of the
video's queries (the sentences are its `queries`; NaN for queries without labels, as in the test split);
the group attribute `fps`, the video's frame rate (step times are picks / fps). File attributes name the
encoder (`encoder`, `encoder_version`, `calibration`) and the F1 mode (`f1_mode`: avg for TVSum, max
for SumMe).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from cliplive.models import shots as shot_tools
from cliplive.models.embedding import CLIP_CALIBRATION, unit
from cliplive.models.errors import InputError
from cliplive.models.files import atomic_path
from cliplive.research import protocol
from cliplive.research.configs import QUERY_SOURCES, SyntheticConfig

log = logging.getLogger(__name__)

DEFAULT_FPS = 30.0  # the community files do not store frame rates; TVSum and SumMe are mostly ~30 fps


@dataclass
class VideoRecord:
    name: str
    features: np.ndarray  # (n_steps, D) float32, L2-normalised on reading
    picks: np.ndarray  # (n_steps,) frame indices
    n_frames: int
    change_points: np.ndarray  # (S, 2) inclusive [first, last] frame of each shot
    fps: float = DEFAULT_FPS
    gtscore: np.ndarray | None = None  # (n_steps,) in [0, 1]
    user_summary: np.ndarray | None = None  # (A, n_frames) 0/1
    user_scores: np.ndarray | None = None  # (A, n_frames)
    query_features: np.ndarray | None = None  # (Q, D)
    queries: list[str] = field(default_factory=list)
    relevant_windows: np.ndarray | None = None  # (M, 2) seconds, [start, end)
    saliency: np.ndarray | None = None  # (Q, clips, annotators) QVHighlights saliency per query, NaN: unlabelled

    @property
    def n_steps(self) -> int:
        return len(self.picks)

    @property
    def times(self) -> np.ndarray:
        """Media time of each sampled frame, seconds."""
        return np.asarray(self.picks) / self.fps

    @property
    def n_frame_per_seg(self) -> np.ndarray:
        return self.change_points[:, 1] - self.change_points[:, 0] + 1


@dataclass(frozen=True)
class DatasetInfo:
    encoder: str = "unknown"  # the encoder's name, as checkpoints record it (e.g. clip:ViT-B-32:openai)
    encoder_version: str = ""  # e.g. "cliplive 0.1.0, open_clip 3.3.0"
    calibration: tuple[float, float] = CLIP_CALIBRATION  # the encoder's zero-shot logit scale and bias
    f1_mode: str = "avg"  # how F1 combines annotators: avg (TVSum) or max (SumMe)


@dataclass
class Dataset:
    info: DatasetInfo
    videos: dict[str, VideoRecord]  # by h5 group key

    @property
    def dim(self) -> int:
        return next(iter(self.videos.values())).features.shape[1]

    @property
    def protocol(self) -> str:
        """What its annotations evaluate: qvhighlights (videos with saliency) or summary (TVSum/SumMe)."""
        return "qvhighlights" if any(v.saliency is not None for v in self.videos.values()) else "summary"

    def select(self, keys: Iterable[str]) -> list[VideoRecord]:
        """Videos by split key; keys with a path prefix (some repositories' splits have them) match by
        their last component."""
        chosen = []
        for key in keys:
            short = key.rsplit("/", 1)[-1]
            if key not in self.videos and short not in self.videos:
                raise InputError(f"split names video {key!r}, which the features file does not have")
            chosen.append(self.videos[key if key in self.videos else short])
        return chosen


# --- the h5 layout ---------------------------------------------------------------------------------


def shots_from_features(features: np.ndarray, picks: np.ndarray, n_frames: int, fps: float) -> np.ndarray:
    """KTS shots over the sampled frames, as the community's (S, 2) inclusive frame ranges."""
    cuts = shot_tools.shot_change_points(features, n_frames / fps)
    starts = np.concatenate([[0], np.asarray(picks)[cuts]]).astype(int)
    ends = np.append(starts[1:], n_frames) - 1
    return np.stack([starts, ends], axis=1)


def write_h5(path: str | Path, dataset: Dataset) -> None:
    """Write atomically (temporary file, then rename)."""
    import h5py

    with atomic_path(path, suffix=".h5") as tmp, h5py.File(tmp, "w") as f:
        for key, value in asdict(dataset.info).items():
            f.attrs[key] = value
        for key, video in dataset.videos.items():
            g = f.create_group(key)
            g["features"] = video.features.astype(np.float32)
            g["picks"] = np.asarray(video.picks, dtype=np.int64)
            g["n_frames"] = int(video.n_frames)
            g["n_steps"] = video.n_steps
            g["change_points"] = np.asarray(video.change_points, dtype=np.int64)
            g["n_frame_per_seg"] = video.n_frame_per_seg
            g["video_name"] = video.name
            g.attrs["fps"] = video.fps
            g.attrs["queries"] = json.dumps(video.queries)
            for name in ("gtscore", "user_summary", "user_scores", "query_features", "relevant_windows", "saliency"):
                value = getattr(video, name)
                if value is not None:
                    g[name] = np.asarray(value, dtype=np.uint8 if name == "user_summary" else np.float32)


def read_h5(path: str | Path) -> Dataset:
    """A features file in the community layout (ours or one of the published ones)."""
    import h5py

    if not Path(path).is_file():
        raise InputError(f"features file not found: {path}")
    try:
        f = h5py.File(path, "r")
    except OSError:
        raise InputError(f"not an HDF5 features file: {path}") from None
    with f:
        defaults = DatasetInfo()
        info = DatasetInfo(
            encoder=str(f.attrs.get("encoder", defaults.encoder)),
            encoder_version=str(f.attrs.get("encoder_version", defaults.encoder_version)),
            calibration=tuple(float(x) for x in f.attrs.get("calibration", defaults.calibration)),
            f1_mode=str(f.attrs.get("f1_mode", defaults.f1_mode)),
        )
        try:
            videos = {key: _read_video(key, f[key]) for key in sorted(f.keys(), key=_natural)}
        except KeyError as e:
            raise InputError(f"{path} is not in the community layout: {e.args[0]}") from None
    if not videos:
        raise InputError(f"no videos in features file {path}")
    return Dataset(info, videos)


def _read_video(key: str, g) -> VideoRecord:
    def optional(name: str) -> np.ndarray | None:
        return np.asarray(g[name]) if name in g else None

    features = np.asarray(g["features"], dtype=np.float32)
    features = unit(features)  # published ones are not unit
    name = g["video_name"][()] if "video_name" in g else key
    return VideoRecord(
        name=name.decode() if isinstance(name, bytes) else str(name),
        features=features,
        picks=np.asarray(g["picks"]).astype(int),
        n_frames=int(np.asarray(g["n_frames"])),
        change_points=np.asarray(g["change_points"]).astype(int).reshape(-1, 2),
        fps=float(g.attrs.get("fps", DEFAULT_FPS)),
        gtscore=optional("gtscore"),
        user_summary=optional("user_summary"),
        user_scores=optional("user_scores"),
        query_features=optional("query_features"),
        queries=json.loads(g.attrs.get("queries", "[]")),
        relevant_windows=optional("relevant_windows"),
        saliency=optional("saliency"),
    )


def _natural(key: str) -> tuple:
    """video_2 before video_10."""
    head, _, tail = key.rpartition("_")
    return (head, int(tail), "") if tail.isdigit() else (key, 0, key)


def video_queries(video: VideoRecord, source: str = "auto") -> np.ndarray:
    """The (Q, D) query tokens a video is scored against.

    stored: the `query_features` extract wrote (the sentences given, or the pseudo-queries summarize would
    derive). centroid: one generic token, the video's mean frame embedding, for files without queries
    (the published TVSum/SumMe files carry GoogLeNet features, in no text space). auto: stored if present.
    """
    if source not in QUERY_SOURCES:
        raise ValueError(f"query source must be one of {QUERY_SOURCES}, not {source!r}")
    if source != "centroid" and video.query_features is not None and len(video.query_features):
        return video.query_features.astype(np.float32)
    if source == "stored":
        raise InputError(f"video {video.name} has no query_features; use --queries centroid")
    mean = video.features.mean(axis=0)
    return unit(mean)[None].astype(np.float32)


# --- annotation files ------------------------------------------------------------------------------


def read_tvsum_annotations(path: str | Path) -> dict[str, np.ndarray]:
    """ydata-tvsum50-anno.tsv: lines of video id, category, comma-separated per-frame scores 1-5; one line
    per annotator (20 per video). -> {video id: (annotators, n_frames) scores}."""
    rows: dict[str, list[np.ndarray]] = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            raise InputError(f"{path}:{number}: expected video id, category and scores separated by tabs")
        rows.setdefault(parts[0], []).append(np.array(parts[2].split(","), dtype=float))
    return {video: np.stack(_same_length(scores)) for video, scores in rows.items()}


def _same_length(rows: list[np.ndarray]) -> list[np.ndarray]:
    n = min(len(r) for r in rows)  # one video's rows should agree; if not, the common frames
    return [r[:n] for r in rows]


def read_summe_annotation(path: str | Path) -> np.ndarray:
    """One SumMe ground-truth .mat (GT/<video>.mat): `user_score` is n_frames x annotators, each user's
    selection. -> (annotators, n_frames)."""
    from scipy.io import loadmat

    mat = loadmat(str(path))
    if "user_score" not in mat:
        raise InputError(f"{path} is not a SumMe ground-truth file (no user_score)")
    return np.asarray(mat["user_score"], dtype=float).T


def read_annotations(path: str | Path) -> tuple[dict, str]:
    """TVSum's .tsv, or SumMe's GT folder (or one .mat) -> ({video name: (A, n_frames)}, "tvsum"|"summe");
    QVHighlights' .jsonl -> ({video name: [QVHighlightsQuery, ...]}, "qvhighlights")."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"annotations not found: {path}")
    if path.suffix == ".tsv":
        return read_tvsum_annotations(path), "tvsum"
    if path.suffix == ".jsonl":
        by_video: dict[str, list[QVHighlightsQuery]] = {}
        for query in read_qvhighlights(path):
            by_video.setdefault(query.vid, []).append(query)
        return by_video, "qvhighlights"
    mats = sorted(path.glob("*.mat")) if path.is_dir() else [path] if path.suffix == ".mat" else []
    if not mats:
        raise InputError(f"annotations must be TVSum's ydata-tvsum50-anno.tsv, SumMe's GT folder of .mat files "
                         f"or QVHighlights' highlight_*_release.jsonl: {path}")
    return {m.stem: read_summe_annotation(m) for m in mats}, "summe"


def annotate(video: VideoRecord, user_scores: np.ndarray, kind: str) -> None:
    """Join one video's annotator scores (A, frames): sets user_scores, gtscore and user_summary.

    tvsum: scores 1-5; each annotator's summary is the protocol's knapsack over the video's shots using
    their scores (how the community built TVSum's user_summary); gtscore = (mean score - 1) / 4.
    summe: each annotator's selection is their summary; gtscore = the fraction who selected the frame.
    """
    scores = _to_frames(np.atleast_2d(np.asarray(user_scores, dtype=float)), video.n_frames, video.name)
    video.user_scores = scores
    if kind == "tvsum":
        video.user_summary = np.stack([protocol.machine_summary(s, video.change_points) for s in scores])
        video.gtscore = (scores[:, video.picks].mean(axis=0) - 1) / 4
    elif kind == "summe":
        video.user_summary = scores > 0
        video.gtscore = video.user_summary[:, video.picks].mean(axis=0)
    else:
        raise ValueError(f"unknown annotation kind {kind!r}")


def _to_frames(scores: np.ndarray, n_frames: int, name: str) -> np.ndarray:
    """Annotations count frames as their authors' decoder did; resample (nearest) when ours differs."""
    if scores.shape[1] == n_frames:
        return scores
    log.warning("annotations of %s have %d frames, the video %d: resampled", name, scores.shape[1], n_frames)
    index = np.minimum((np.arange(n_frames) * scores.shape[1] / n_frames).astype(int), scores.shape[1] - 1)
    return scores[:, index]


@dataclass
class QVHighlightsQuery:
    """One line of QVHighlights' JSON lines (the test split has no labels: the lists stay empty)."""

    qid: int
    query: str
    duration: float
    vid: str
    relevant_windows: list[list[float]] = field(default_factory=list)  # [start, end] seconds
    relevant_clip_ids: list[int] = field(default_factory=list)  # 2-second clips
    saliency_scores: list[list[int]] = field(default_factory=list)  # per relevant clip, 3 annotators, 0-4

    def saliency(self) -> np.ndarray:
        """(clips, annotators) saliency over the whole video."""
        return protocol.qvhighlights_saliency(self.duration, self.relevant_clip_ids, self.saliency_scores)


def read_qvhighlights(path: str | Path) -> list[QVHighlightsQuery]:
    fields = set(QVHighlightsQuery.__dataclass_fields__)
    queries = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if line.strip():
            try:
                record = json.loads(line)
                queries.append(QVHighlightsQuery(**{k: v for k, v in record.items() if k in fields}))
            except (json.JSONDecodeError, TypeError, AttributeError) as e:
                raise InputError(f"{path}:{number}: not a QVHighlights record ({e})") from None
    return queries


def annotate_highlights(video: VideoRecord, queries: Sequence[QVHighlightsQuery]) -> None:
    """Join one video's QVHighlights queries, in the order of its stored queries (their sentences): sets
    saliency (Q, clips, annotators), NaN for queries without labels."""
    rows = [q.saliency() if q.relevant_clip_ids else np.full_like(q.saliency(), np.nan) for q in queries]
    if len({r.shape for r in rows}) > 1:
        raise InputError(f"the QVHighlights queries of {video.name} disagree on its duration or annotators")
    video.saliency = np.stack(rows)


# --- splits ----------------------------------------------------------------------------------------


def make_splits(keys: Sequence[str], count: int = 5, seed: int = 0) -> list[dict]:
    """`count` random train/test splits (80/20 for 5) as the literature's split files hold them. The test
    sets are the folds of one shuffle, so every video is tested exactly once and the mean over splits is
    a mean over the whole dataset (independent shuffles would test some videos several times, others never)."""
    if not 2 <= count <= len(keys):
        raise InputError(f"cannot make {count} splits of {len(keys)} videos")
    folds = np.array_split(np.random.default_rng(seed).permutation(len(keys)), count)
    return [
        {"train_keys": [keys[i] for i in sorted(set(range(len(keys))) - set(fold))], "test_keys": [keys[i] for i in sorted(fold)]}
        for fold in folds
    ]


def write_splits(path: str | Path, splits: list[dict]) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(splits, indent=1))


def read_splits(path: str | Path) -> list[dict]:
    try:
        splits = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"splits file not found: {path}") from None
    except json.JSONDecodeError as e:
        raise InputError(f"splits file {path} is not JSON: {e}") from None
    if not isinstance(splits, list) or not all(isinstance(s, dict) and {"train_keys", "test_keys"} <= set(s) for s in splits):
        raise InputError(f"splits file {path} must be a list of {{train_keys, test_keys}} objects")
    return splits


# --- the synthetic benchmark -----------------------------------------------------------------------


def synthetic_benchmark(config: SyntheticConfig = SyntheticConfig()) -> Dataset:
    rng = np.random.default_rng(config.seed)
    concepts = unit(rng.normal(size=(config.concepts, config.dim)))
    text_only = unit(rng.normal(size=config.dim))  # what every sentence has and no ordinary frame does
    unrelated = unit(rng.normal(size=(4 * config.concepts, config.dim)))
    videos = {}
    for v in range(config.videos):
        target = concepts[v % config.concepts]
        distractor = unit(text_only + config.distractor_concept * target + config.distractor_other * unrelated[rng.integers(len(unrelated))])
        video = _synthetic_video(config, rng, target, distractor, unrelated)
        noise = rng.normal(size=(config.sentences, config.dim)) / math.sqrt(config.dim)
        video.query_features = unit(target + config.text_gap * text_only + config.sentence_noise * noise).astype(np.float32)
        video.name = f"synthetic_{v:03d}"
        video.queries = [f"concept {v % config.concepts}, sentence {j}" for j in range(config.sentences)]
        videos[f"video_{v + 1}"] = video
    info = DatasetInfo(f"synthetic:{config.dim}d:seed{config.seed}", "cliplive synthetic v1", config.calibration, "avg")
    return Dataset(info, videos)


def _synthetic_video(config: SyntheticConfig, rng, concept, distractor, unrelated) -> VideoRecord:
    n = config.steps
    content = np.zeros((n, config.dim))
    relevant = np.zeros(n, dtype=bool)
    start = 0
    while start < n:
        end = min(n, start + int(rng.integers(config.scene_steps[0], config.scene_steps[1] + 1)))
        kind = rng.random()
        if kind < config.relevant_share:
            content[start:end], relevant[start:end] = concept, True
        elif kind < config.relevant_share + config.distractor_share:
            content[start:end] = distractor
        else:
            content[start:end] = unrelated[rng.integers(len(unrelated))]
        start = end
    background = np.cumsum(config.drift * rng.normal(size=(n, config.dim)), axis=0) + rng.normal(size=config.dim)
    noise = rng.normal(size=(n, config.dim)) / math.sqrt(config.dim)
    features = unit(content + config.background * unit(background) + config.frame_noise * noise)
    picks = np.arange(n) * config.every
    n_frames = n * config.every
    change_points = shots_from_features(features, picks, n_frames, config.fps)
    video = VideoRecord("", features.astype(np.float32), picks, n_frames, change_points, config.fps)
    scores = np.stack([_annotator(config, rng, relevant) for _ in range(config.annotators)])
    annotate(video, protocol.upsample(scores.T, picks, n_frames).T, "tvsum")
    video.relevant_windows = shot_tools.runs(relevant) * (config.every / config.fps)
    return video


def _annotator(config: SyntheticConfig, rng, relevant: np.ndarray) -> np.ndarray:
    """One annotator's 1-5 scores per sampled frame: the truth, boundaries jittered, plus noise."""
    marked = np.zeros_like(relevant)
    for start, end in shot_tools.runs(relevant):
        lo, hi = rng.integers(-config.annotator_jitter, config.annotator_jitter + 1, size=2)
        marked[max(0, start + lo) : max(0, min(len(marked), end + hi))] = True
    return np.clip(np.round(1 + 3 * marked + config.annotator_noise * rng.normal(size=len(marked))), 1, 5)


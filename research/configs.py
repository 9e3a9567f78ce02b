"""The research commands' configurations, as data: what `cliplive train`, `synthetic` and `evaluate` accept
and default to. Torch-free, so that the command line is built (and `--help` answers) without importing torch."""

from __future__ import annotations

from dataclasses import dataclass

from cliplive.models.errors import InputError

QUERY_SOURCES = ("auto", "stored", "centroid")  # see dataset.video_queries
PROTOCOLS = ("summary", "qvhighlights")  # TVSum/SumMe's table; QVHighlights' highlight detection
SCORE_SOURCES = ("scorer", "annotators")  # evaluate's frame scores: the scorer's, or the annotators' own (the oracle row)


TARGETS = ("gtscore", "binary")
AUTO_DISTILL = 1.0  # the weight `distill` auto tries: the one that raised offline F1 to 74.8 in earlier measurements (docs/reproduce.md)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 60
    patience: int = 10  # epochs without a better validation loss before stopping
    lr: float = 1e-3
    weight_decay: float = 1e-2
    target: str = "gtscore"  # or "binary"
    importance: float = 1.0  # loss weights
    diversity: float = 0.05
    reconstruction: float = 0.05
    # None (auto): train a bidirectional teacher, then the student with and without distilling it (weight
    # AUTO_DISTILL), and keep the one with the better validation F1 at `lookahead`; 0: no teacher; > 0: that weight
    distill: float | None = None
    lookahead: float = 0.0  # seconds: the lookahead the scorer is trained for (auto distillation is judged there)
    validation: float = 0.2  # share of the training videos held out for early stopping
    queries: str = "auto"  # see dataset.video_queries
    layers: int = 2  # scorer architecture
    heads: int = 8
    window: int = 32
    seed: int = 0
    threads: int = 1  # intra-op threads: the scorer's matrices are small, so one is fastest, and runs match anywhere

    def __post_init__(self):
        if self.target not in TARGETS:
            raise InputError(f"target must be one of {TARGETS}, not {self.target!r}")
        if min(self.importance, self.diversity, self.reconstruction, self.distill or 0.0) < 0:
            raise InputError("loss weights must not be negative")
        if not self.lookahead >= 0:
            raise InputError("lookahead must be >= 0 seconds")
        if not 0 <= self.validation < 1:
            raise InputError("validation share must be in [0, 1)")
        if min(self.epochs, self.threads) < 1:
            raise InputError("epochs and threads must be at least 1")



@dataclass(frozen=True)
class SyntheticConfig:
    """Embedding sequences with known relevant stretches; no downloads.

    Each video looks for one concept of a shared pool (as TVSum's videos share categories). A video is a
    sequence of scenes: the concept, a distractor, or unrelated content, under a slowly drifting background
    and strong per-frame noise. Sentences are noisy views of the concept plus a text-only direction
    (CLIP's modality gap): zero-shot cosine ranks real and distractor scenes alike, since distractors
    share that direction; a trained scorer can learn to discount it, and to pool evidence over time,
    since relevance persists over a scene while the noise is per frame.
    """

    videos: int = 20
    steps: int = 200  # sampled frames per video
    dim: int = 64
    concepts: int = 6
    sentences: int = 3  # per video's query
    annotators: int = 5
    fps: float = 30.0  # frame rate; picks every `every` frames (2 samples per second)
    every: int = 15
    scene_steps: tuple[int, int] = (4, 16)  # scene lengths, sampled frames (2-8 s)
    relevant_share: float = 0.2  # chance that a scene shows the concept
    distractor_share: float = 0.2  # chance that it shows the concept's distractor
    text_gap: float = 1.0  # weight of the text-only direction in a sentence (1: cosine to concept 0.71)
    distractor_concept: float = 0.4  # a distractor: the text-only direction, a little of the concept ...
    distractor_other: float = 0.6  # ... and unrelated content
    sentence_noise: float = 0.3
    frame_noise: float = 1.0  # per-frame noise, relative to the scene content
    background: float = 0.5  # weight of the drifting background
    drift: float = 0.2  # random-walk step of the background
    annotator_noise: float = 0.7  # std of annotator scores (scale 1-5)
    annotator_jitter: int = 2  # annotators place boundaries up to this many samples off
    calibration: tuple[float, float] = (10.0, -3.0)  # zero-shot logit = 10 cos - 3
    seed: int = 0


"""Training the causal scorer on stored features (the encoder stays frozen), with CLIP-It's objectives.

Per video, with s the aggregate score logits, p = sigmoid(s) the soft selection and x the frame features:
- importance: binary cross-entropy of s, and of the best-matching query's relevance logit, against the
  target: gtscore rescaled to [0, 1] per video, or binary labels (the top `budget` of gtscore). Training
  the relevance too matters: the online segmenter decides from it.
- diversity (CLIP-It's L_div): the mean cosine similarity between selected frames, weighted by p_i p_j;
  low when the summary's frames differ.
- reconstruction (CLIP-It's L_recon): squared distance between the p-weighted mean frame and the video's
  mean frame; the summary should stand for the video.
  CLIP-It computes both on the transformer's outputs; the scorer exposes logits only, so they are
  computed on its inputs, the frozen encoder's features, which live in the same space.
- distillation: a bidirectional teacher (same architecture, attending `window` frames on both sides) is
  trained first with the same objectives; the causal student then also matches the teacher's
  probabilities, learning to anticipate what only the future reveals. By default (`distill` None) the
  student is trained both with and without it, and the one whose validation F1 is higher at the lookahead
  the scorer is for (`lookahead`, through the online segmenter) is kept: it helps on some data and not on
  other.

Training starts from the zero-shot scorer (residual heads zero), so it learns corrections to calibrated
cosine scoring. One video per step, in an order drawn from the seed; torch runs deterministically. A
held-out share of the training videos gives the validation loss and F1 (the offline protocol) after every
epoch. Training stops after `patience` epochs without a better validation loss and keeps the best epoch's
weights: the loss, not the F1, decides, since F1 on a few held-out videos jumps whenever one shot flips.

The kept scorer's shots on every video it was given, as the online segmenter decides them at a few
lookaheads (`evaluate.shot_prior`), go with it: a stream it scores ranks its first shots against them.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch.nn import functional as F

from cliplive.models.errors import InputError
from cliplive.models.scorer import CausalScorer, ScorerConfig, ScorerOutput
from cliplive.research import protocol
from cliplive.research.configs import AUTO_DISTILL, TrainConfig
from cliplive.research.dataset import Dataset, VideoRecord, video_queries
from cliplive.models.shots import ShotPrior
from cliplive.research.evaluate import PRIOR_LOOKAHEADS, UNLIMITED, score_video, shot_prior

class BidirectionalScorer(CausalScorer):
    """The distillation teacher: each frame attends to the `window` frames on either side of it."""

    def _visible(self, distance: torch.Tensor) -> torch.Tensor:
        return distance.abs() < self.config.window


@dataclass
class Example:
    video: VideoRecord
    frames: torch.Tensor  # (T, D)
    queries: torch.Tensor  # (Q, D)
    target: torch.Tensor  # (T,) in [0, 1]
    pos_weight: torch.Tensor  # weight of positives in the importance loss (balances binary labels)
    teacher: torch.Tensor | None = None  # (T,) teacher probabilities, when distilling


@dataclass
class EpochLog:
    epoch: int
    train_loss: float
    validation_loss: float
    validation_f1: float


@dataclass
class TrainResult:
    scorer: CausalScorer  # with the kept epoch's weights, in eval mode, and its `shot_prior`
    history: list[EpochLog]
    best: EpochLog  # the epoch whose weights were kept
    distill: float = 0.0  # the distillation weight the kept student was trained with
    # auto: each candidate weight's validation F1 at the config's lookahead
    distill_f1: dict[float, float] | None = None


Log = Callable[[str], None]


def train(
    dataset: Dataset, keys: Sequence[str], config: TrainConfig = TrainConfig(), log: Log | None = None
) -> TrainResult:
    """Train the causal student on the videos `keys`, holding `config.validation` of them out."""
    log = log or (lambda line: print(line, file=sys.stderr))
    with _reproducible(config):
        return _train(dataset, keys, config, log)


@contextmanager
def _reproducible(config: TrainConfig) -> Iterator[None]:
    """Seeded, deterministic kernels and a fixed thread count (CPU reductions split across threads round
    differently); the process's settings come back afterwards."""
    deterministic, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    torch.manual_seed(config.seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(config.threads)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(threads)


def _train(dataset: Dataset, keys: Sequence[str], config: TrainConfig, log: Log) -> TrainResult:
    examples = [_example(v, config) for v in dataset.select(keys)]
    if len(examples) < 2 and config.validation > 0:
        raise InputError("training needs at least 2 videos (one is held out for validation)")
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(len(examples))
    n_val = max(1, round(config.validation * len(examples))) if config.validation > 0 else 0
    validation, training = [examples[i] for i in order[:n_val]], [examples[i] for i in order[n_val:]]
    scale, bias = dataset.info.calibration
    scorer_config = ScorerConfig(dataset.dim, config.heads, config.layers, config.window, logit_scale=scale, logit_bias=bias)
    mode = dataset.info.f1_mode
    weights = [config.distill] if config.distill is not None else [0.0, AUTO_DISTILL] if validation else [0.0]
    student_rng = copy.deepcopy(rng)  # every student sees the same batches, with or without a teacher
    if max(weights) > 0:
        teacher = _fit(BidirectionalScorer(scorer_config), training, validation, config, mode, copy.deepcopy(rng), log, "teacher")
        with torch.no_grad():
            for example in training + validation:
                example.teacher = torch.sigmoid(teacher.scorer(example.frames, example.queries).score)
    results = {}
    for weight in weights:
        with torch.random.fork_rng():
            torch.manual_seed(config.seed)  # and starts from the same weights
            student = CausalScorer(scorer_config)  # untrained: the zero-shot scorer
        label = "student" if len(weights) == 1 else f"student, distill {weight:g}"
        results[weight] = _fit(student, training, validation, replace(config, distill=weight), mode, copy.deepcopy(student_rng), log, label)
        results[weight].distill = weight
    kept = weights[0]
    if len(results) > 1:
        f1 = {weight: validation_f1(result.scorer, training, validation, config.lookahead, mode) for weight, result in results.items()}
        kept = max(weights, key=lambda w: (f1[w], -w))  # a tie keeps the plain student
        log(f"distillation at lookahead {config.lookahead:g} s: validation F1 " +
            ", ".join(f"{100 * f1[w]:.1f} with weight {w:g}" for w in weights) + f": keeping weight {kept:g}")
        results[kept].distill_f1 = f1
    results[kept].scorer.shot_prior = _shot_prior(results[kept].scorer, training + validation)
    return results[kept]


def validation_f1(scorer: CausalScorer, training: Sequence[Example], validation: Sequence[Example], lookahead: float,
                  mode: str) -> float:
    """The mean F1 of `scorer` on the held-out videos, decided by the online segmenter at `lookahead` (by
    shots, ranked against the training videos' shots, as the checkpoint will run)."""
    prior = _shot_prior(scorer, training, [lookahead]) if 0 < lookahead < UNLIMITED else None
    with torch.no_grad():
        return float(np.mean([score_video(_scores(scorer, e), e.video, lookahead, mode, prior=prior).f1 for e in validation]))


def _shot_prior(scorer: CausalScorer, examples: Sequence[Example], lookaheads: Sequence[float] = PRIOR_LOOKAHEADS) -> ShotPrior:
    with torch.no_grad():
        return shot_prior([(_scores(scorer, e), e.video) for e in examples], lookaheads)


def _scores(scorer: CausalScorer, example: Example) -> np.ndarray:
    return scorer(example.frames, example.queries).score.double().numpy()


def _example(video: VideoRecord, config: TrainConfig) -> Example:
    if video.gtscore is None:
        raise InputError(f"video {video.name} has no gtscore to train on: extract with --annotations")
    score = np.asarray(video.gtscore, dtype=np.float64)
    if config.target == "binary":
        target = (score >= np.quantile(score, 1 - protocol.BUDGET)).astype(np.float64)
        positives = max(target.sum(), 1.0)
        pos_weight = (len(target) - positives) / positives
    else:
        spread = np.ptp(score)
        target = (score - score.min()) / spread if spread > 0 else np.full_like(score, 0.5)
        pos_weight = 1.0
    return Example(
        video,
        torch.from_numpy(video.features),
        torch.from_numpy(video_queries(video, config.queries)),
        torch.from_numpy(target.astype(np.float32)),
        torch.tensor(pos_weight, dtype=torch.float32),
    )


def _fit(model, training, validation, config, mode, rng, log, label) -> TrainResult:
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    history: list[EpochLog] = []
    best, best_state, stale = EpochLog(0, np.nan, np.inf, np.nan), copy.deepcopy(model.state_dict()), 0
    for epoch in range(1, config.epochs + 1):
        model.train()
        losses = []
        for i in rng.permutation(len(training)):
            loss = objective(model, training[i], config)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        model.eval()
        val_losses, val_f1s = [], []
        with torch.no_grad():
            for e in validation:  # one forward pass each for the loss and the F1
                out = model(e.frames, e.queries)
                val_losses.append(objective(model, e, config, out).item())
                val_f1s.append(score_video(out.score.double().numpy(), e.video, UNLIMITED, mode).f1)
        val_loss = float(np.mean(val_losses)) if validation else np.nan
        val_f1 = float(np.mean(val_f1s)) if validation else np.nan
        history.append(EpochLog(epoch, float(np.mean(losses)), val_loss, val_f1))
        log(f"{label} epoch {epoch}: train loss {np.mean(losses):.4f}, validation loss {val_loss:.4f}, F1 {100 * val_f1:.1f}")
        if not validation or val_loss < best.validation_loss:
            best, best_state, stale = history[-1], copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
            if stale >= config.patience:
                log(f"{label}: no better validation loss for {config.patience} epochs, stopping")
                break
    model.load_state_dict(best_state)
    return TrainResult(model.eval(), history, best)


def objective(model: CausalScorer, example: Example, config: TrainConfig, out: ScorerOutput | None = None) -> torch.Tensor:
    """The weighted sum of the losses on one video (see the module docstring); `out`: the model's output
    on it when already computed."""
    out = out if out is not None else model(example.frames, example.queries)
    best_relevance = out.relevance.max(dim=-1).values
    importance = sum(
        F.binary_cross_entropy_with_logits(logits, example.target, pos_weight=example.pos_weight)
        for logits in (out.score, best_relevance)
    )
    selection = torch.sigmoid(out.score)
    x = example.frames
    pair = selection[:, None] * selection[None, :] * (1 - torch.eye(len(x)))
    diversity = (pair * (x @ x.T)).sum() / pair.sum().clamp(min=1e-8)
    summary = (selection @ x) / selection.sum().clamp(min=1e-8)
    reconstruction = (summary - x.mean(dim=0)).pow(2).sum()
    loss = config.importance * importance + config.diversity * diversity + config.reconstruction * reconstruction
    if example.teacher is not None and config.distill:
        distill = sum(F.binary_cross_entropy_with_logits(logits, example.teacher) for logits in (out.score, best_relevance))
        loss = loss + config.distill * distill
    return loss

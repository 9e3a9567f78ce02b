"""The public Python API (`import cliplive`): cheap to import, the README's examples run as written,
summaries agree with `cliplive summarize --json`, and `watch` is an async iterator that ends cleanly."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

import cliplive
from cliplive.stream.segmenter import SegmenterConfig
from conftest import scene_cycle

ROOT = Path(__file__).resolve().parent.parent
ALWAYS = SegmenterConfig(open_threshold=-50, close_threshold=-50, min_length=0.0, min_score=0.0)  # random weights still give highlights
FILE_FPS = 25  # the test files' frame rate


@pytest.fixture(scope="module")
def scenes(media) -> Path:
    """15 s at 25 fps cycling through five very different 1.5 s scenes: even random weights find highlights."""
    return scene_cycle(media / "api-scenes.mp4", seconds=15, fps=FILE_FPS, gop=25)


@pytest.fixture(scope="module")
def tiny_spec(tiny_clip_config) -> cliplive.EncoderSpec:
    return cliplive.EncoderSpec(kind="clip", model=tiny_clip_config, pretrained="random", precision="fp32")


def readme_examples() -> list[str]:
    """The Python code blocks of the README's "Python API" section, in order."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Python API\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_import_is_cheap_and_the_version_is_the_projects():
    code = "import sys, cliplive; print(cliplive.__version__); print(sorted(m for m in ('torch', 'numpy', 'av') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/").stdout.split("\n")
    assert out[0] == tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"] == cliplive.__version__
    assert out[1] == "[]", "import cliplive must not load torch, numpy or PyAV"
    code = "import cliplive.models, cliplive.stream, cliplive.research, cliplive.server; print(cliplive.stream.__name__)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/").stdout == "cliplive.stream\n"
    assert set(cliplive.__all__) >= {"summarize", "watch", "pipeline", "create_encoder", "EncoderSpec", "Summary", "Highlight"}


def test_summary_frames_match_the_files_rate_and_to_dict_is_the_cli_json(scenes, tiny_spec, tiny_clip_config):
    ungated = SegmenterConfig(min_score=0.0)  # random weights: no probability means anything
    summary = cliplive.summarize(scenes, ["a test pattern", "a dog"], encoder=tiny_spec, budget=0.3, segmenter=ungated)
    assert summary.fps == FILE_FPS and summary.sampled_fps == 2.0 and summary.duration == pytest.approx(15, abs=0.1)
    assert summary.segments, "a budget of 30 % keeps something"
    for h in summary.segments:
        assert (h.start_frame, h.end_frame) == (round(FILE_FPS * h.start), round(FILE_FPS * h.end))
        assert 0 <= h.start < h.end <= summary.duration and h.query in summary.queries and h.id.startswith("api-scenes.mp4-")
    assert len(summary.frames["t"]) == len(summary.frames["score"]) in (30, 31)  # 2 fps over 15 s, end frame or not

    cli = subprocess.run(
        [str(ROOT / ".venv/bin/cliplive"), "summarize", str(scenes), "-s", "a test pattern", "-s", "a dog",
         "--budget", "0.3", "--min-score", "0", "--encoder", "clip", "--model", tiny_clip_config, "--pretrained", "random", "--precision", "fp32",
         "--json", "-"], capture_output=True, text=True, timeout=240)
    assert cli.returncode == 0, cli.stderr
    printed = json.loads(cli.stdout.strip().splitlines()[-1])
    ours = summary.to_dict()
    assert ours.keys() == printed.keys()
    timing = {"seconds", "realtime_factor"}  # how long it took: the only keys that differ between runs
    assert {k: v for k, v in ours.items() if k not in timing} == {k: v for k, v in printed.items() if k not in timing}
    assert [(h.start, h.end, h.score, h.query, h.id) for h in summary.segments] == [
        (s["start"], s["end"], s["score"], s["query"], s["id"]) for s in printed["segments"]]


def test_the_readme_examples_run_as_written(h264_with_audio, capsys):
    from cliplive.server.demo import clip_path

    summarize_example, watch_example, pipeline_example = readme_examples()
    scope = {"video": clip_path("bikes")}  # real footage (25 fps): the gate keeps conse silent on generated scenes
    exec(summarize_example, scope)
    summary = scope["summary"]
    assert summary.to_dict() == scope["data"] and summary.to_dict()["encoder"].startswith("conse")
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == len(summary.segments) > 0
    for line, h in zip(printed, summary.segments):
        assert f"frames {round(FILE_FPS * h.start)}-{round(FILE_FPS * h.end)}" in line

    exec(watch_example, scope)
    event = asyncio.run(asyncio.wait_for(scope["first_highlight"](str(h264_with_audio)), 120))
    assert event is None or (event["kind"], event["type"]) == ("highlight", "new")

    exec(pipeline_example, scope)
    output = scope["result"]["output"]
    assert [o["frame"] for o in output] == [[h.start_frame, h.end_frame - 1] for h in summary.segments]
    for o in output:
        assert o.keys() == {"frame", "timestamps", "score", "query"}
        assert all(re.fullmatch(r"\d\d:\d\d:\d\d\.\d\d\d", t) for t in o["timestamps"])
        first, last = o["frame"]
        assert o["timestamps"] == [f"00:00:{first / FILE_FPS:06.3f}", f"00:00:{last / FILE_FPS:06.3f}"]


async def test_watch_yields_status_and_highlight_events_and_ends_with_the_file(h264_with_audio, tiny_clip):
    events = []
    async with asyncio.timeout(60):
        async for event in cliplive.watch(str(h264_with_audio), ["a test pattern"], fps=4, encoder=tiny_clip, segmenter=ALWAYS):
            events.append(event)
    assert [e["state"] for e in events if e["kind"] == "status"] == ["connecting", "live", "ended"]
    highlights = [e for e in events if e["kind"] == "highlight"]
    assert highlights and highlights[0]["type"] == "new" and highlights[-1]["type"] == "end"
    assert {e["stream"] for e in events} == {"stream0"} and all(e["schema"] == "cliplive.event" for e in events)
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("stream-")]


async def test_leaving_watch_early_stops_the_streams(h264_with_audio, tiny_clip):
    started = time.monotonic()
    async with asyncio.timeout(30):
        events = cliplive.watch([str(h264_with_audio), str(h264_with_audio)], ["a test pattern"], fps=4, encoder=tiny_clip,
                                segmenter=ALWAYS, realtime=True)  # paced: 6 s of video each
        async for event in events:
            if event["kind"] == "highlight":
                break
        await events.aclose()
        assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("stream-")], "streams still running"
    assert time.monotonic() - started < 5.5, "stopped at the first highlight, not at the end of the files"

    async with asyncio.timeout(30):  # a plain `break`: the loop's async-generator hook closes it soon after
        async for event in cliplive.watch(str(h264_with_audio), ["a test pattern"], fps=4, encoder=tiny_clip,
                                          segmenter=ALWAYS, realtime=True):
            if event["kind"] == "status" and event["state"] == "live":
                break
        while [t for t in asyncio.all_tasks() if t.get_name().startswith("stream-")]:
            await asyncio.sleep(0.05)


def test_bad_input_fails_before_a_model_loads(tmp_path):
    from cliplive.models.errors import InputError

    with pytest.raises(InputError, match="no such file"):
        cliplive.summarize(tmp_path / "missing.mp4", ["x"], encoder="clip")  # would download CLIP if it loaded
    with pytest.raises(ValueError, match="unknown task"):
        cliplive.pipeline("image-captioning", encoder=cliplive.EncoderSpec(kind="conse"))

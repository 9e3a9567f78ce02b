"""The command line as a user meets it: real processes, real files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ffprobe_json
from cliplive.server.demo import interval_f1


def cliplive(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cliplive.server.cli", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def tiny(tiny_clip_config):
    return ["--encoder", "clip", "--model", tiny_clip_config, "--pretrained", "random"]


def assert_one_line_error(result: subprocess.CompletedProcess, pattern: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("cliplive: error: ") and "Traceback" not in result.stderr
    assert __import__("re").search(pattern, lines[0]), lines[0]


@pytest.mark.parametrize(
    "kind,pattern",
    [
        ("not a video", "not a readable video file"),
        ("zero-length", "not a readable video file"),
        ("audio-only", "audio-only file"),
        ("unsupported codec", "unsupported video codec"),
    ],
)
def test_bad_videos(bad_inputs, tiny, tmp_path, kind, pattern):
    out = tmp_path / "out.json"
    assert_one_line_error(cliplive("summarize", str(bad_inputs[kind]), "-s", "a dog", *tiny, "--json", str(out)), pattern)
    assert not out.exists()


def test_missing_file_empty_sentence_and_bad_options(h264_with_audio, tiny, tmp_path):
    assert_one_line_error(cliplive("summarize", str(tmp_path / "nope.mp4"), "-s", "a dog", *tiny), "no such file")
    assert_one_line_error(cliplive("summarize", str(h264_with_audio), "-s", "  ", *tiny), "empty sentence")
    assert_one_line_error(cliplive("summarize", str(h264_with_audio), "--image", str(tmp_path / "x.png"), *tiny), "reference image not found")
    bad_budget = cliplive("summarize", str(h264_with_audio), "--budget", "1.5")
    assert bad_budget.returncode == 2 and "must be in [0, 1)" in bad_budget.stderr


def test_unwritable_outputs_fail_before_work_and_keep_old_files(h264_with_audio, tiny, tmp_path):
    assert_one_line_error(cliplive("summarize", str(h264_with_audio), "-s", "a", *tiny, "-o", str(tmp_path / "no" / "x.mp4")),
                          "output directory does not exist")
    assert_one_line_error(cliplive("summarize", str(h264_with_audio), "-s", "a", *tiny, "--json", "/sys/x.json"),
                          "output path is not writable")
    assert_one_line_error(cliplive("summarize", str(h264_with_audio), "-s", "a", *tiny, "--json", str(tmp_path)),
                          "is a directory")


def test_missing_clip_weights_say_what_to_do(h264_with_audio, tmp_path):
    result = cliplive("summarize", str(h264_with_audio), "-s", "a dog", "--pretrained", str(tmp_path / "missing.safetensors"))
    assert_one_line_error(result, r"checkpoint not found")
    assert result.returncode == 1


@pytest.fixture(scope="module")
def montage(tmp_path_factory) -> tuple[Path, list]:
    """The demo's montage of real footage (with audio) and its known layout."""
    from cliplive.server.demo import build_montage

    path = tmp_path_factory.mktemp("montage") / "montage.mp4"
    return path, build_montage(path)


def test_summarize_writes_json_and_a_video_matching_it(montage, tmp_path):
    video, truth = montage
    out, js = tmp_path / "summary.mp4", tmp_path / "summary.json"
    js.write_text("old")
    query, start, end = truth[2]  # "a man wearing a tie": the last part
    long_query = "a man in a suit and a tie sitting in a car and talking on his phone " * 20
    result = cliplive("summarize", str(video), "-s", query, "-s", long_query, "--encoder", "conse",
                      "--budget", "0.3", "-o", str(out), "--json", str(js))
    assert result.returncode == 0, result.stderr
    assert "truncated" in result.stderr  # the long sentence: a warning, not an error
    summary = json.loads(js.read_text())
    assert summary["video"] == str(video) and abs(summary["duration"] - truth[-1][2]) < 0.1
    assert summary["queries"][0] == query and summary["pseudo_queries"] == []
    assert len(summary["frames"]["t"]) == len(summary["frames"]["relevance"]) == 61
    segments = summary["segments"]
    kept = sum(s["end"] - s["start"] for s in segments)
    assert 0.2 <= kept / summary["duration"] <= 0.3 + 1e-3  # the budget: at most 30% of the time
    assert interval_f1([(s["start"], s["end"]) for s in segments], [(start, end)]) > 0.6
    streams = ffprobe_json(out, "-show_streams")["streams"]
    video_stream = next(s for s in streams if s["codec_type"] == "video")
    assert abs(float(video_stream["duration"]) - kept) <= 1.0  # within one GOP (1 s); in fact to a frame:
    assert abs(float(video_stream["duration"]) - kept) <= 0.1
    assert {s["codec_type"] for s in streams} == {"video", "audio"}


def test_generic_summary_derives_pseudo_queries(h264_with_audio, tiny, tmp_path):
    js = tmp_path / "generic.json"
    result = cliplive("summarize", str(h264_with_audio), *tiny, "--shots", "--json", str(js))
    assert result.returncode == 0, result.stderr
    summary = json.loads(js.read_text())
    assert summary["pseudo_queries"] == summary["queries"] and 1 <= len(summary["queries"]) <= 3
    assert all(q.startswith("a photo of a ") for q in summary["queries"])
    assert summary["mode"] == "offline" and summary["lookahead"] is None
    kept = sum(s["end"] - s["start"] for s in summary["segments"])
    assert 0 < kept <= 0.15 * summary["duration"] + 0.5


def test_json_to_stdout_is_one_document_through_a_pipe_and_generic_scores_mean_something(montage):
    """`summarize V --json - | python -m json.tool`: stdout is the JSON alone (the table goes to stderr).
    Generic (no -s) on real footage with conse: the chosen class is by construction the frames' best match,
    whose sigmoid saturates at 1.00; the score is the class's probability among the 1000 instead."""
    video, _ = montage
    summarize = subprocess.Popen([sys.executable, "-m", "cliplive.server.cli", "summarize", str(video), "--encoder", "conse",
                                  "--json", "-"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    tool = subprocess.run([sys.executable, "-m", "json.tool"], stdin=summarize.stdout, capture_output=True, text=True, timeout=240)
    summarize.stdout.close()
    err = summarize.stderr.read().decode()
    assert summarize.wait(timeout=60) == 0 and tool.returncode == 0, err + tool.stderr
    summary = json.loads(tool.stdout)
    assert {"video", "duration", "queries", "pseudo_queries", "segments", "frames"} <= summary.keys()
    assert summary["pseudo_queries"] == summary["queries"] and len(summary["queries"]) == 3
    assert f'no sentences given: looking for "{summary["queries"][0]}"' in err
    assert f"{len(summary['segments'])} highlight" in err  # the human table: on stderr
    scores = [s["score"] for s in summary["segments"]]
    assert scores and all(0 < score < 0.99 for score in scores), scores
    assert len(set(scores)) == len(scores)
    assert all(s["end"] <= summary["duration"] for s in summary["segments"])


def test_demo_finds_each_sentence_causally(tmp_path):
    """The README's first command: real footage, conse, lookahead 0, per-query F1 >= 0.9."""
    result = cliplive("demo", "-o", str(tmp_path), timeout=400)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASS" in result.stdout
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["lookahead"] == 0.0 and summary["encoder"].startswith("conse:")
    from cliplive.server.demo import PARTS

    f1s = [float(line.split()[1]) for line in result.stdout.splitlines() if line.strip().startswith("F1 ")]
    assert len(f1s) == len(PARTS) and min(f1s) >= 0.9
    # The printed F1 agrees with the JSON's segments.
    assert (tmp_path / "summary.mp4").stat().st_size > 0
    first = next(line for line in result.stdout.splitlines() if line.strip().startswith("F1 "))
    truth = tuple(float(x) for x in first.split("truth ")[1].split(" s")[0].split("-"))
    assert interval_f1([(s["start"], s["end"]) for s in summary["segments"] if s["query_index"] == 0], [truth]) == pytest.approx(f1s[0], abs=0.01)


# --- one encoder spec, one error mapping (in-process: no models load) -----------------------------


def test_every_command_that_loads_an_encoder_has_the_specs_options(tmp_path):
    from dataclasses import fields

    from cliplive.models.spec import EncoderSpec
    from cliplive.server.cli import build_parser
    from cliplive.server.config import load_config
    from cliplive.server.options import encoder_spec

    parser = build_parser()
    spec_options = ["--encoder", "conse", "--model", "m.json", "--pretrained", "w.pt", "--precision", "bf16",
                    "--backend", "torch", "--max-batch", "4", "--threads", "2"]
    wanted = EncoderSpec(kind="conse", model="m.json", pretrained="w.pt", precision="bf16", backend="torch", max_batch=4, threads=2)
    for command in (["summarize", "v.mp4"], ["watch", "rtsp://cam/x"], ["extract", "v.mp4", "-o", "x.h5"], ["serve"]):
        assert encoder_spec(parser.parse_args(command)) == EncoderSpec(), command  # unset options: the defaults
        assert encoder_spec(parser.parse_args([*command, *spec_options])) == wanted, command
    args = parser.parse_args(["summarize", "v.mp4", "--checkpoint", "s.pt", "-s", "a dog", "-s", "a cat", "--image", "r.png"])
    assert encoder_spec(args).checkpoint == "s.pt" and args.sentences == ["a dog", "a cat"] and args.images == ["r.png"]
    assert EncoderSpec().precision == "auto"

    # The config file's [encoder] table is the same spec; serve's options override it key by key.
    config = tmp_path / "cliplive.toml"
    config.write_text('[encoder]\nkind = "clip"\nmodel = "tiny.json"\nprecision = "fp32"\nmax_batch = 8\n')
    base = load_config(config).encoder
    assert base == EncoderSpec(model=str(tmp_path / "tiny.json"), precision="fp32", max_batch=8)
    merged = encoder_spec(parser.parse_args(["serve", "--config", str(config), "--encoder", "conse", "--max-batch", "2"]), base)
    assert merged == EncoderSpec(kind="conse", model=str(tmp_path / "tiny.json"), precision="fp32", max_batch=2)
    assert {f.name for f in fields(EncoderSpec)} == {"kind", "model", "pretrained", "precision", "backend", "checkpoint", "max_batch", "threads"}


def test_encoder_values_are_checked_alike_on_the_command_line_and_in_the_config(tmp_path, capsys):
    from cliplive.server.cli import build_parser
    from cliplive.server.config import ConfigError, load_config

    parser = build_parser()
    for bad in (["--precision", "fp16"], ["--encoder", "nope"], ["--max-batch", "0"], ["--threads", "x"]):
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args(["serve", *bad])
        assert exit_.value.code == 2, bad
    assert "invalid choice: 'fp16'" in capsys.readouterr().err
    config = tmp_path / "cliplive.toml"
    for table, message in (('precision = "fp16"', "encoder.precision"), ("max_batch = 0", "max_batch must be between 1 and 256"),
                           ('kind = "nope"', "encoder.kind"), ("batch = 4", "encoder.batch")):
        config.write_text(f"[encoder]\n{table}\n")
        with pytest.raises(ConfigError, match="cliplive.toml") as error:
            load_config(config)
        assert message in str(error.value), (table, str(error.value))


@pytest.mark.parametrize(
    "error,status,line",
    [
        ("InputError('a bad sentence')", 2, "cliplive: error: a bad sentence"),
        ("MediaError('not a readable video file: x')", 2, "cliplive: error: not a readable video file: x"),
        ("EncoderUnavailable('no weights')", 1, "cliplive: error: no weights"),
        ("OSError(28, 'No space left on device')", 1, "cliplive: error: [Errno 28] No space left on device"),
        ("ValueError('a bug')", 1, "cliplive: internal error: ValueError: a bug"),
        ("RuntimeError('boom')", 1, "cliplive: internal error: RuntimeError: boom"),
    ],
)
def test_failures_map_by_class_and_bugs_log_their_traceback(monkeypatch, capsys, caplog, error, status, line):
    import logging

    from cliplive.models.encoder import EncoderUnavailable
    from cliplive.models.errors import InputError
    from cliplive.server import cli, summarize
    from cliplive.stream.source import MediaError

    classes = {"InputError": InputError, "MediaError": MediaError, "EncoderUnavailable": EncoderUnavailable}

    def fail(args):
        raise eval(error, {**classes})

    monkeypatch.setattr(summarize, "run_summarize", fail)
    monkeypatch.setattr(cli, "setup_logging", lambda verbosity: None)  # keep the process's logging as pytest set it
    caplog.set_level(logging.ERROR, logger="cliplive")
    assert cli.main(["summarize", "v.mp4"]) == status
    assert capsys.readouterr().err.strip().splitlines() == [line]
    logged = [r for r in caplog.records if r.name == "cliplive" and r.exc_info]
    if "internal error" in line:  # a bug: its traceback is always logged, whatever the verbosity
        assert len(logged) == 1 and logged[0].levelno == logging.ERROR and logged[0].exc_info[0].__name__ in line
    else:
        assert logged == []


def test_command_modules_do_not_import_the_cli():
    """cli.py assembles the parser; the commands share cliplive.server.options and never import cli back."""
    import ast

    server = Path(__file__).parent.parent / "server"
    for path in server.glob("*.py"):
        if path.name == "cli.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
                assert "cliplive.server.cli" not in names, path.name


# --- one vocabulary: every command's options (in-process: no models load) ---------------------------


def _commands():
    import argparse

    from cliplive.server.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, commands.choices


def test_every_option_and_positional_has_help_and_outputs_are_dash_o():
    import argparse

    parser, commands = _commands()
    assert set(commands) == {"summarize", "watch", "demo", "serve", "token", "extract", "synthetic", "train", "evaluate"}
    for name, command in {"cliplive": parser, **commands}.items():
        for action in command._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)) or action.help == argparse.SUPPRESS:
                continue
            what = f"{name} {'/'.join(action.option_strings) or action.dest}"
            assert action.help and action.help.strip(), f"{what}: no help text"
            writes = action.dest in ("out", "out_dir", "output") or any(o.startswith("--out") for o in action.option_strings)
            if writes:
                assert action.option_strings == ["-o", "--output"], f"{what}: an output is -o/--output"
        assert command.format_help()  # every help renders (a stray % in a help text would raise here)
    assert {name for name, c in commands.items() if any("--output" in a.option_strings for a in c._actions)} == {
        "summarize", "demo", "extract", "synthetic", "train"}


def test_version_verbose_anywhere_and_misspelled_options_name_their_command(capsys):
    from importlib.metadata import version

    from cliplive.server.cli import build_parser

    parser = build_parser()
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"cliplive {version('cliplive')}"
    for argv, count in ((["summarize", "v.mp4"], 0), (["-v", "summarize", "v.mp4"], 1), (["summarize", "v.mp4", "-v"], 1),
                        (["-v", "summarize", "-vv", "v.mp4"], 3), (["serve", "--verbose"], 1)):
        args = parser.parse_args(argv)
        assert args.verbose == count and not hasattr(args, "command_verbose"), argv
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(["summarize", "x", "--fsp", "2"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("usage: cliplive summarize ")
    assert err.strip().splitlines()[-1] == "cliplive summarize: error: unrecognized arguments: --fsp 2"
    # --lookahead: one parser; only evaluate has a use for 'unlimited'
    assert parser.parse_args(["evaluate", "--data", "d.h5", "--lookahead", "unlimited", "--lookahead", "2"]).lookahead == [
        float("inf"), 2.0]
    for command in (["summarize", "v.mp4"], ["watch", "v.mp4"], ["demo"]):
        assert parser.parse_args([*command, "--lookahead", "1.5"]).lookahead == 1.5
        with pytest.raises(SystemExit):
            parser.parse_args([*command, "--lookahead", "unlimited"])
        assert "invalid lookahead value: 'unlimited'" in capsys.readouterr().err
    assert parser.parse_args(["demo", "-o", "d"]).output == "d" and parser.parse_args(["demo"]).output == "cliplive-demo"


def test_one_highlight_is_singular_and_the_table_goes_where_it_is_told(capsys):
    import io

    from cliplive.server.summarize import print_segments

    segment = {"start": 1.0, "end": 2.0, "score": 0.5, "query": "a dog"}
    result = {"video": "v.mp4", "duration": 3.0, "realtime_factor": 9.0, "encoder": "conse", "pseudo_queries": [],
              "segments": [segment]}
    print_segments(result)
    assert capsys.readouterr().out.startswith("v.mp4: 1 highlight in 3.0 s")
    side = io.StringIO()
    print_segments({**result, "segments": [segment, segment]}, side)
    assert side.getvalue().startswith("v.mp4: 2 highlights in") and capsys.readouterr().out == ""


def test_dash_is_refused_for_file_outputs(h264_with_audio):
    assert_one_line_error(cliplive("summarize", str(h264_with_audio), "-s", "a", "--encoder", "conse", "-o", "-"),
                          r"'-' \(stdout\) is only for JSON outputs")
    assert not Path("-").exists()


def test_loading_notice_only_on_a_terminal(monkeypatch, capsys):
    import io

    from cliplive.server import progress

    progress.notice("loading encoder conse ...")
    assert capsys.readouterr().err == ""  # not a terminal: nothing new

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    progress.notice("loading encoder conse ...")
    assert terminal.getvalue() == "loading encoder conse ...\n"


def test_segments_never_end_past_the_files_end(tiny_clip, monkeypatch):
    """Frames timed past a container's stated duration (the segmenter ends open segments at the last frame at
    least): the summary cuts its segments at the file's end."""
    import numpy as np

    from cliplive.stream import summarize as offline
    from cliplive.stream.source import VideoInfo

    times = np.arange(0, 31.0, 0.5)  # the last frame at 30.5 s of a file said to last 30.0 s
    direction = tiny_clip.encode_texts(["a dog"])[0]
    embeddings = np.repeat(direction[None], len(times), axis=0)  # every frame matches: one segment to the end
    info = VideoInfo(duration=30.0, fps=25.0, width=320, height=240, codec="h264", has_audio=False)
    monkeypatch.setattr(offline, "encode_video", lambda *args, **kwargs: (times, embeddings, info))
    for options in ({"budget": 0, "lookahead": 0.0}, {"budget": 0.5, "shots": True}):
        result = offline.summarize(offline.SummaryRequest("v.mp4", ["a dog"], **options), tiny_clip)
        assert result["segments"] and result["duration"] == 30.0
        assert all(s["start"] < s["end"] <= 30.0 and s["best_frame_ts"] <= 30.0 for s in result["segments"]), result["segments"]

"""Start-up: the command line answers `--help` and argument errors without importing torch (or the
research stack), so they come back at once; heavy imports happen only on the path in use."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "open_clip", "scipy", "av", "h5py")

PROBE = """
import json, sys
from cliplive.server.cli import main
try:
    status = main(sys.argv[1:])
except SystemExit as e:
    status = e.code
print(json.dumps({"status": status, "heavy": sorted(m for m in %r if m in sys.modules)}), file=sys.stderr)
""" % (HEAVY,)


def cli(*argv: str) -> tuple[dict, str]:
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=60)
    *lines, last = done.stderr.strip().splitlines()
    return json.loads(last), done.stdout + "\n".join(lines)


@pytest.mark.parametrize("argv", [
    ["--help"], ["summarize", "--help"], ["watch", "--help"], ["serve", "--help"], ["train", "--help"],
    ["evaluate", "--help"], ["extract", "--help"], ["synthetic", "--help"], ["demo", "--help"], ["--version"],
])
def test_help_imports_nothing_heavy(argv):
    result, output = cli(*argv)
    assert result == {"status": 0, "heavy": []}
    assert "usage: cliplive" in output or output.startswith("cliplive ")


def test_argument_errors_import_nothing_heavy():
    result, output = cli("summarize", "clip.mp4", "--fps", "-1")
    assert result == {"status": 2, "heavy": []}
    assert "--fps" in output.splitlines()[-1]
    result, output = cli("train", "--data", "x.h5", "--target", "nonsense")
    assert result == {"status": 2, "heavy": []}
    assert "invalid choice: 'nonsense'" in output


def test_defaults_come_from_the_configs():
    """The parser's defaults are the research configs' own (one place says what they are)."""
    from cliplive.research.configs import TrainConfig
    from cliplive.server.cli import build_parser

    args = build_parser().parse_args(["train", "--data", "x.h5", "-o", "x.pt"])
    assert (args.epochs, args.lr, args.distill, args.target) == (TrainConfig.epochs, TrainConfig.lr, TrainConfig.distill, TrainConfig.target)


def test_summarize_from_the_cache_imports_neither_torch_nor_open_clip(tiny_clip_config, h264_with_audio, tmp_path, monkeypatch):
    """Once a CLIP model's towers are exported, `summarize` (zero-shot) runs on ONNX Runtime alone: the
    seconds torch and open_clip take to import are not paid, and the result is the same as the first run's."""
    monkeypatch.setenv("CLIPLIVE_CACHE", str(tmp_path / "cache"))
    argv = ["summarize", str(h264_with_audio), "-s", "a test pattern", "--encoder", "clip", "--model", tiny_clip_config,
            "--pretrained", "random", "--budget", "0"]
    first, _ = cli(*argv, "--json", str(tmp_path / "first.json"))
    again, output = cli(*argv, "--json", str(tmp_path / "again.json"))
    assert first["status"] == 0 and {"open_clip", "torch"} <= set(first["heavy"])  # the first run exports
    assert again == {"status": 0, "heavy": ["av"]}, output
    runs = [json.loads((tmp_path / f"{name}.json").read_text())["frames"] for name in ("first", "again")]
    assert runs[0]["t"] == runs[1]["t"] and runs[0]["relevance"] == runs[1]["relevance"]

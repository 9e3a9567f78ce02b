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

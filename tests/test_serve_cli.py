"""`cliplive serve` as a user starts it: the encoder options on its command line, over its config file,
and the hints its errors print, pasted back."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

SERVE = [sys.executable, "-m", "cliplive.server.cli", "serve"]


@pytest.fixture
def no_clip_weights(tmp_path) -> dict:
    """An environment where CLIP weights are neither cached nor downloadable: an empty hub cache and a hub
    host that never resolves (.invalid), whether or not this machine has network."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_ENDPOINT")}
    return {**env, "HF_ENDPOINT": "https://hub.invalid", "HF_HOME": str(tmp_path / "hf"),
            "HF_HUB_CACHE": str(tmp_path / "hf" / "hub")}


def one_line_error(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cliplive: error: "), result.stderr
    return lines[0]


def serving(args: list[str], cwd: Path, env: dict | None = None, timeout: float = 90) -> None:
    """Start `cliplive serve ARGS`, check /healthz on the port it reports, and stop it with SIGTERM."""
    proc = subprocess.Popen([*SERVE, *args], cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=lambda: [*map(lines.put, proc.stderr), lines.put(None)], daemon=True).start()
    seen = []
    try:
        deadline = time.monotonic() + timeout
        while True:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            assert line is not None, f"cliplive serve exited ({proc.wait()}): {''.join(seen)}"
            seen.append(line)
            if match := re.search(r"serving on (http://\S+)", line):
                break
        url = match.group(1)
        assert httpx.get(f"{url}/healthz", timeout=10).json() == {"status": "ok"}
        assert httpx.get(f"{url}/api/streams", timeout=10).json() == []
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    # uvicorn shuts down gracefully, then re-raises the signal it caught: the exit status says SIGTERM.
    assert proc.returncode in (0, -signal.SIGTERM), "".join(seen)


def test_serve_without_clip_weights_prints_one_line_whose_hint_works(tmp_path, no_clip_weights):
    result = subprocess.run(SERVE, cwd=tmp_path, env=no_clip_weights, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1  # unavailable, not the user's mistake
    line = one_line_error(result)
    assert "--pretrained /path" in line and "use --encoder conse" in line, line
    assert not (tmp_path / "cliplive-data").exists()  # a failed start leaves nothing behind (no token)
    # Pasted, the hint starts the service: serve has the options its error names.
    serving(["--encoder", "conse", "--no-auth", "--port", "0"], tmp_path, no_clip_weights)


def test_a_config_file_encoder_error_names_the_table_too(tmp_path, no_clip_weights):
    config = tmp_path / "cliplive.toml"
    config.write_text('[encoder]\nkind = "clip"\npretrained = "missing.safetensors"\n')
    result = subprocess.run([*SERVE, "--config", str(config)], cwd=tmp_path, env=no_clip_weights, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 1
    line = one_line_error(result)
    assert "CLIP checkpoint not found: missing.safetensors" in line
    assert f"in {config} the same goes in the [encoder] table (kind = \"conse\"" in line, line

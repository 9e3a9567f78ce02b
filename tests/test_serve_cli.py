"""`cliplive serve` as a user starts it: the encoder options on its command line, over its config file,
and the hints its errors print, pasted back."""

from __future__ import annotations

import json
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


def serving(args: list[str], cwd: Path, env: dict | None = None, timeout: float = 90, stop: int = signal.SIGTERM,
            headers: dict | None = None) -> list[str]:
    """Start `cliplive serve ARGS`, check /healthz on the port it reports, stop it with `stop` (a signal), and
    return the lines it printed up to its "serving on" line."""
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
        if headers is None and (token := re.search(r"generated an API token, saved in .*:\n(\S+)", "".join(seen))):
            headers = {"Authorization": f"Bearer {token.group(1)}"}
        assert httpx.get(f"{url}/api/streams", headers=headers, timeout=10).json() == []
    finally:
        proc.send_signal(stop)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    # A graceful stop by SIGTERM or SIGINT is a success (uvicorn alone would raise the signal again and die by it).
    assert proc.returncode == 0, "".join(seen)
    return seen


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


def test_a_new_token_is_saved_and_shown_once_listening_and_sigint_exits_0(tmp_path, no_clip_weights):
    seen = serving(["--encoder", "conse", "--port", "0"], tmp_path, no_clip_weights, stop=signal.SIGINT)
    assert "generated an API token" in seen[0] and "serving on" in seen[-1], seen
    stored = json.loads((tmp_path / "cliplive-data" / "tokens.json").read_text())["tokens"]
    assert [t["role"] for t in stored] == ["admin"] and seen[1].strip() not in json.dumps(stored)


@pytest.mark.parametrize("case", ["bad host in the config", "bad --host", "data_dir is a file", "data_dir under a file",
                                  "bad webhook option", "port in use"])
def test_a_failed_start_creates_nothing_and_says_why_in_one_line(tmp_path, no_clip_weights, case):
    import socket

    config, args, expected = tmp_path / "cliplive.toml", ["--encoder", "conse"], None
    (tmp_path / "file").write_text("not a folder")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        if case == "bad host in the config":
            config.write_text('[server]\nhost = "999.1.1.1"\n')
            expected = "server.host: host must be an IP address or a host name, not '999.1.1.1'"
        elif case == "bad --host":
            config.write_text("")
            args += ["--host", "999.1.1.1"]
            expected = "host must be an IP address or a host name, not '999.1.1.1'"
        elif case == "data_dir is a file":
            config.write_text('[server]\ndata_dir = "file"\n')
            expected = f"data_dir is a file, not a folder: {tmp_path / 'file'}"
        elif case == "data_dir under a file":
            config.write_text('[server]\ndata_dir = "file/data"\n')
            expected = f"data_dir cannot be made: {tmp_path / 'file'} is a file, not a folder"
        elif case == "bad webhook option":
            config.write_text('[[webhooks]]\nurl = "http://127.0.0.1:9/hook"\nretries = "many"\nbogus = 1\n')
            expected = "webhooks[0]: "
        else:
            config.write_text(f"[server]\nport = {taken.getsockname()[1]}\n")
            expected = f"cannot listen on 127.0.0.1:{taken.getsockname()[1]}: Address already in use"
        result = subprocess.run([*SERVE, "--config", str(config), *args], cwd=tmp_path, env=no_clip_weights,
                                capture_output=True, text=True, timeout=120)
    assert result.returncode != 0, result.stderr
    assert "token" not in result.stderr and "serving on" not in result.stderr, result.stderr
    assert result.returncode == (1 if case == "port in use" else 2)  # not the user's mistake: unavailable
    assert expected in one_line_error(result), result.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "hf") == ["cliplive.toml", "file"]

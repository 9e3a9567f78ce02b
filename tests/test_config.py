"""The config file's documentation and errors: the example lists every option (it is generated from
the models), loads as it is, and validation errors read as plain words."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from cliplive.server.config import Config, ConfigError, SourceSettings, StreamSpec, load_config
from cliplive.server.config_example import example_config

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "docs" / "cliplive.example.toml"


def test_the_committed_example_is_the_generated_one():
    assert EXAMPLE.read_text() == example_config(), (
        "docs/cliplive.example.toml is stale: python -m cliplive.server.config_example > docs/cliplive.example.toml")
    printed = subprocess.run([sys.executable, "-m", "cliplive.server.config_example"], capture_output=True, text=True,
                             check=True).stdout
    assert printed == example_config()


def test_the_example_names_every_option_and_loads(tmp_path):
    text = example_config()
    keys = {line.lstrip("# ").split(" = ")[0] for line in text.splitlines() if " = " in line}
    tables = {"server": Config.model_fields["server"].annotation, "streams": StreamSpec, "options": SourceSettings}
    for model in tables.values():
        assert set(model.model_fields) - {"options"} <= keys, model  # options: the [streams.options] table
    for table in ("encoder", "segmenter"):
        assert {f.name for f in dataclasses.fields(Config.model_fields[table].annotation)} <= keys, table
    for header in ("[server]", "[encoder]", "[segmenter]", "[[streams]]", "[streams.options]", "# [[webhooks]]", "# [mqtt]"):
        assert header in text.splitlines()
    assert {"url", "secret", "max_retries", "host", "topic_prefix", "qos"} <= keys  # the sinks' options too
    config = load_config(EXAMPLE)
    assert isinstance(config, Config) and [s.name for s in config.streams] == ["driveway"]
    defaults = Config()
    assert config.encoder == defaults.encoder and config.segmenter == defaults.segmenter
    assert config.server.model_dump(exclude={"data_dir"}) == defaults.server.model_dump(exclude={"data_dir"})
    # Every commented-out option also loads when uncommented (the sinks' tables aside: they take dicts).
    uncommented = "\n".join(line[2:] if line.startswith("# ") and " = " in line and not line.startswith("# [") else line
                            for line in text.split("# each [[webhooks]]")[0].splitlines())
    (tmp_path / "full.toml").write_text(uncommented)
    full = load_config(tmp_path / "full.toml")
    assert full.encoder.threads == 2 and full.segmenter.budget == 0.15 and full.server.token == "at-least-16-characters"


@pytest.mark.parametrize("text, message", [
    ("[server]\nprot = 1", "server.prot: unknown option 'prot' (did you mean 'port'?)"),
    ("[encoder]\nkindd = 'clip'", "encoder.kindd: unknown option 'kindd' (did you mean 'kind'?)"),
    ("[segmenter]\nopen_treshold = 1", "segmenter.open_treshold: unknown option 'open_treshold' (did you mean 'open_threshold'?)"),
    ("[[streams]]\nname = 'a'\nsource = 'rtsp://cam/x'\nsentences = ['x']\nfsp = 2", "streams.0.fsp: unknown option 'fsp' (did you mean 'fps'?)"),
    ("[[streams]]\nname = 'a'\nsource = 'rtsp://cam/x'\nsentences = ['x']\n[streams.options]\nrealtim = true",
     "streams.0.options.realtim: unknown option 'realtim' (did you mean 'realtime'?)"),
    ("colour = 1", "colour: unknown option 'colour'"),
    ("[[streams]]\nsource = 'rtsp://cam/x'\nsentences = ['x']", "streams.0.name: is required"),
    ("[[streams]]\nname = 'a'\nsource = 'rtsp://cam/x'\nsentences = ['x']\nfps = 0", "streams.0.fps: must be greater than 0"),
    ("[server]\nport = 'x'", "server.port: must be a valid integer"),
    ("[server]\ntoken = 'short'", "server.token: must have at least 16 characters"),
    ("[[streams]]\nname = 'a'\nsource = 'rtsp://cam/x'\nsentences = ['x']\n[streams.options]\ntransport = 'ud'",
     "streams.0.options.transport: must be 'tcp' or 'udp'"),
    ("[encoder]\nmax_batch = 0", "encoder: max_batch must be between 1 and 256, not 0"),
])
def test_config_errors_in_plain_words(tmp_path, text, message):
    path = tmp_path / "cliplive.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value) == f"{path}: {message}" or (message in str(error.value) and "should" not in str(error.value))
    assert "Extra inputs" not in str(error.value) and "Field required" not in str(error.value)
    assert "Value error" not in str(error.value)


def test_the_deployment_files_match_the_project():
    """Not a build (no Docker engine in the tests): the Dockerfile copies every package folder pyproject
    maps, runs what `cliplive serve` accepts, and the systemd unit is hardened and writes only its data dir."""
    import tomllib

    folders = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"].values())
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = {line.split()[1] for line in dockerfile.splitlines() if line.startswith("COPY ")}
    assert folders <= copied, f"the image lacks {folders - copied}"
    assert "USER cliplive" in dockerfile and 'VOLUME ["/data"]' in dockerfile and "/healthz" in dockerfile
    from cliplive.server.cli import build_parser

    args = build_parser().parse_args(["serve", "--config", "/config/cliplive.toml", "--host", "0.0.0.0"])
    assert (args.config, args.host) == ("/config/cliplive.toml", "0.0.0.0")
    unit = dict(line.split("=", 1) for line in (ROOT / "docs" / "cliplive.service").read_text().splitlines()
                if "=" in line and not line.startswith("#"))
    assert unit["User"] == "cliplive" and unit["Restart"] == "on-failure" and unit["NoNewPrivileges"] == "yes"
    assert unit["ProtectSystem"] == "strict" and unit["ReadWritePaths"] == unit["WorkingDirectory"] == "/var/lib/cliplive"
    assert unit["ExecStart"].startswith("/opt/cliplive/.venv/bin/cliplive serve --config ")

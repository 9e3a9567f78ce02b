"""docs/cliplive.example.toml, generated from the config models (`cliplive.server.config`) and the sinks'
signatures, so the example cannot miss an option: `python -m cliplive.server.config_example`."""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from cliplive.server.config import Config, SourceSettings, StreamSpec, table_type

EXAMPLE_HEADER = """\
# cliplive serve --config cliplive.toml
#
# Every option there is, with its default; generated from cliplive.server.config.Config by
# `python -m cliplive.server.config_example` (tests/test_config.py checks this file is up to date).
# Every key is optional, except a stream's name, source and sentences (or images); unknown keys are
# errors. Relative paths are relative to this file's folder. Commented-out options are unset by default.
"""
# Values shown for options that are unset (None) by default, or required.
EXAMPLE_VALUES: dict[str, Any] = {
    "server.token": "at-least-16-characters",
    "encoder.checkpoint": "scorer.pt",
    "encoder.threads": 2,
    "segmenter.budget": 0.15,
    "streams.name": "driveway",
    "streams.source": "rtsp://user:secret@192.168.1.20:554/stream1",
    "streams.sentences": ["a person at the front door", "a delivery van"],
    "streams.images": ["reference/our-cat.jpg"],
    "streams.retention": {"events_max_age_days": 7, "clips_max_bytes": 5_000_000_000},
    "webhooks.url": "https://example.com/hooks/cliplive",
    "webhooks.secret": "shared-secret-for-hmac",
    "webhooks.streams": ["driveway"],
    "mqtt.host": "mqtt.local",
    "mqtt.username": "cliplive",
    "mqtt.password": "secret",
    "mqtt.streams": ["driveway"],
    "retention.events_max_age_days": 30,
    "retention.events_max_bytes": 500_000_000,
    "retention.highlights_max_age_days": 90,
    "retention.thumbnails_max_bytes": 1_000_000_000,
    "retention.clips_max_bytes": 20_000_000_000,
}
UNSET_BY_DEFAULT = {"streams.images"}  # shown commented out although they have a (empty) default
TABLE_NOTES = {
    "server": "the HTTP service",
    "retention": "what the service keeps (cliplive.server.retention): unset limits keep everything; oldest data goes first",
    "encoder": "cliplive.models.spec.EncoderSpec; serve's --encoder, --model... override these",
    "segmenter": "cliplive.stream.segmenter.SegmenterConfig: when a frame's score opens and closes a highlight, and "
                 "(min_score) whether anything matches at all; serve's --min-score overrides min_score",
    "streams": "streams declared here start at every start (the file wins over API changes to the same name)",
    "streams.options": "how the stream's source is read",
    "webhooks": "each [[webhooks]] table is passed to cliplive.server.sinks.WebhookSink: POSTs each event",
    "mqtt": "passed to cliplive.server.sinks.MqttSink: publishes each event",
}


def example_config() -> str:
    """docs/cliplive.example.toml: every option of `Config` (and of the sinks it configures), with its
    default and its description, from the models themselves, so the example cannot miss one."""
    from cliplive.server.sinks import MqttSink, WebhookSink

    out = [EXAMPLE_HEADER]
    for table in ("server", "encoder", "segmenter", "retention"):
        out += _table(table, _options(table_type(Config.model_fields[table].annotation)), array=False)
    order = ["name", "source", "sentences", "images", "fps"]  # then the rest, in the model's order
    stream_options = sorted((o for o in _options(StreamSpec) if o[0] != "options"),
                            key=lambda o: order.index(o[0]) if o[0] in order else len(order))
    out += _table("streams", stream_options, array=True)
    out += _table("streams.options", _options(SourceSettings), array=False)
    out += _table("webhooks", _signature_options(WebhookSink), array=True, commented=True)
    out += _table("mqtt", _signature_options(MqttSink), array=False, commented=True)
    return "\n".join(out).rstrip("\n") + "\n"


def _table(name: str, options: list[tuple[str, Any, str]], array: bool, commented: bool = False) -> list[str]:
    header = f"[[{name}]]" if array else f"[{name}]"
    lines = ["", f"# {TABLE_NOTES[name]}", ("# " if commented else "") + header]
    for key, default, about in options:
        where = f"{name.split('.')[0]}.{key}" if name != "streams.options" else f"streams.options.{key}"
        value = EXAMPLE_VALUES.get(where, default)
        unset = commented or default is None or where in UNSET_BY_DEFAULT
        if default is REQUIRED:
            about = "required" + (f"; {about}" if about else "")
        elif default is None and "unset" not in about:
            about = f"{about} (unset by default)" if about else "unset by default"
        line = ("# " if unset and default is not REQUIRED or commented else "") + f"{key} = {_toml(value)}"
        lines.append(f"{line:<39} # {about}" if about else line)
    return lines


REQUIRED = object()


def _options(model: type) -> list[tuple[str, Any, str]]:
    """(name, default or REQUIRED, description) of each field of a pydantic model or a dataclass."""
    comments = _field_comments(model)
    if isinstance(model, type) and issubclass(model, BaseModel):
        found = []
        for name, f in model.model_fields.items():
            default = REQUIRED if f.is_required() else f.get_default(call_default_factory=True)
            found.append((name, default, f.description or comments.get(name, "")))
        return found
    return [(f.name, f.default if f.default is not dataclasses.MISSING else f.default_factory(),
             f.metadata.get("help") or comments.get(f.name, "")) for f in dataclasses.fields(model)]


def _signature_options(cls: type) -> list[tuple[str, Any, str]]:
    """A sink's keyword arguments: what its config table takes."""
    found = []
    for name, p in inspect.signature(cls.__init__).parameters.items():
        if name == "self":
            continue
        default = REQUIRED if p.default is inspect.Parameter.empty else p.default
        found.append((name, list(default) if isinstance(default, tuple) else default, ""))
    return found


def _field_comments(cls: type) -> dict[str, str]:
    """The comment at the end of each field's line in the class's source (`x: int = 1  # what x is`)."""
    try:
        lines, _ = inspect.getsourcelines(cls)
    except (OSError, TypeError):
        return {}
    found = {}
    for line in lines:
        match = re.match(r"\s+(\w+): [^#]*?#\s*(.+)$", line.rstrip())
        if match and match.group(1) not in found:
            found[match.group(1)] = match.group(2).strip()
    return found


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (str, Path)):
        return json.dumps(str(value))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if value is None or value is REQUIRED:
        return '""'
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML for {value!r}")


if __name__ == "__main__":
    sys.stdout.write(example_config())

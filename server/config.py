"""`cliplive.toml`: the service's options and the streams it watches, as typed, validated models.

The same models check what the HTTP API receives: a stream declared in the file and one POSTed to
`/api/streams` are one `StreamSpec`. Unknown keys are refused everywhere, so a typo is an error and
not a silently ignored option.
"""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from cliplive.models.errors import InputError
from cliplive.models.spec import EncoderSpec
from cliplive.stream.live import source_kind
from cliplive.stream.segmenter import SegmenterConfig

STREAM_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"  # safe in URLs, MQTT topics and file names
NETWORK_SCHEMES = ("rtsp", "rtsps", "http", "https")  # what the API accepts unless local sources are allowed


class ConfigError(InputError):
    """A bad configuration file; the message names the file and each offending key."""


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


Sentence = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]


class SourceSettings(StrictModel):
    """How a stream's source is read (see `cliplive.stream.live.SourceOptions`)."""

    transport: Literal["tcp", "udp"] = "tcp"
    open_timeout: float = Field(10.0, gt=0, le=300)
    stall_timeout: float = Field(5.0, gt=0, le=300)
    realtime: bool = True  # local files play at real-time pace, as a camera would


class QuerySet(StrictModel):
    """What to look for: sentences, reference images, or both."""

    sentences: list[Sentence] = Field(default_factory=list, max_length=64)
    images: list[str] = Field(default_factory=list, max_length=16, description="reference images: paths on the server")

    @model_validator(mode="after")
    def _has_queries(self) -> QuerySet:
        if not self.sentences and not self.images:
            raise ValueError("give at least one sentence or reference image")
        return self


class StreamSpec(QuerySet):
    """One stream: where its video comes from and what to look for in it."""

    name: str = Field(pattern=STREAM_NAME, description="unique; letters, digits, '_', '.', '-'")
    source: str = Field(min_length=1, max_length=2048, description="rtsp://, rtsps://, http(s)://, .m3u8; local paths if allowed")
    fps: float = Field(2.0, gt=0, le=30, description="frames sampled per second")
    options: SourceSettings = Field(default_factory=SourceSettings)


class ServerSettings(StrictModel):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    token: str | None = Field(None, min_length=16, description="API bearer token; generated into data_dir when unset")
    allow_local_sources: bool = False  # API may name local files, file:, devices and rtsp-listen://
    data_dir: Path = Path("cliplive-data")  # relative to the config file
    buffer_minutes: float = Field(2.0, ge=0, le=60, description="rolling packet buffer per live stream, for clips")
    max_body_bytes: int = Field(64 * 1024, ge=1024, le=16 * 1024 * 1024)
    cors_origins: list[str] = Field(default_factory=list)  # CORS stays off unless origins are listed


class Config(StrictModel):
    server: ServerSettings = Field(default_factory=ServerSettings)
    encoder: EncoderSpec = Field(default_factory=EncoderSpec)  # the CLI's encoder options, as one table
    segmenter: SegmenterConfig = Field(default_factory=SegmenterConfig)
    streams: list[StreamSpec] = Field(default_factory=list)
    webhooks: list[dict[str, Any]] = Field(default_factory=list)  # passed to cliplive.server.sinks.WebhookSink
    mqtt: dict[str, Any] | None = None  # passed to cliplive.server.sinks.MqttSink

    @model_validator(mode="after")
    def _unique_names(self) -> Config:
        names = [s.name for s in self.streams]
        if duplicates := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"stream names must be unique: {', '.join(duplicates)}")
        return self


def load_config(path: str | Path | None) -> Config:
    """Read and check a config file (None: the defaults). Relative paths in it are relative to its folder."""
    if path is None:
        return Config()
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {path}: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    try:
        config = Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"{path}: {describe_errors(e)}") from None
    base = path.resolve().parent
    config.server.data_dir = base / config.server.data_dir
    encoder = config.encoder
    config.encoder = replace(
        encoder,
        model=str(base / encoder.model) if encoder.model.endswith(".json") else encoder.model,
        pretrained=str(base / encoder.pretrained) if (base / encoder.pretrained).is_file() else encoder.pretrained,
        checkpoint=str(base / encoder.checkpoint) if encoder.checkpoint else None,
    )
    for i, stream in enumerate(config.streams):
        stream.source = _relative_to(base, stream.source)
        stream.images = [str(base / image) for image in stream.images]
        try:
            source_kind(stream.source)
        except InputError as e:
            raise ConfigError(f"{path}: streams[{i}] ({stream.name}): {e}") from None
    return config


def describe_errors(error: ValidationError) -> str:
    """One line: `where: what` for each problem, e.g. `streams.0.fps: Input should be greater than 0`."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}" for e in error.errors())


def check_source(source: str, allow_local: bool) -> None:
    """Refuse what an API client may not make the server open: anything but rtsp(s)/http(s) URLs with a
    host, unless the config allows local sources (files, file:, devices, rtsp-listen://)."""
    if any(ord(c) < 33 or c == "\x7f" for c in source):
        raise InputError("source must not contain spaces or control characters")
    scheme = urlsplit(source).scheme.lower() if "://" in source else ""
    if scheme in NETWORK_SCHEMES:
        if not urlsplit(source).hostname:
            raise InputError(f"source URL has no host: {source!r}")
    elif not allow_local:
        allowed = ", ".join(f"{s}://" for s in NETWORK_SCHEMES)
        raise InputError(f"source refused: only {allowed} URLs are allowed (the server's config does not allow local sources)")
    source_kind(source)  # the remaining checks: a supported scheme, an existing file


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _relative_to(base: Path, source: str) -> str:
    if "://" in source or source.startswith("/"):
        return source
    return str(base / source)

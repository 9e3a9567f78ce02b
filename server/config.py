"""`cliplive.toml`: the service's options and the streams it watches, as typed, validated models.

The same models check what the HTTP API receives: a stream declared in the file and one POSTed to
`/api/streams` are one `StreamSpec`. Unknown keys are refused everywhere, so a typo is an error and
not a silently ignored option.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import re
import socket
import tomllib
import typing
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator, model_validator

from cliplive.models.errors import InputError
from cliplive.models.spec import EncoderSpec
from cliplive.stream.hosts import Resolver, check_host as check_source_host  # (check_host below: a bind address)
from cliplive.stream.live import lower_scheme, source_kind
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

    transport: Literal["tcp", "udp"] = Field("tcp", description="RTSP lower transport: tcp or udp")
    open_timeout: float = Field(10.0, gt=0, le=300, description="seconds to connect")
    stall_timeout: float = Field(5.0, gt=0, le=300, description="seconds without a frame before the input counts as stalled")
    realtime: bool = True  # local files play at real-time pace, as a camera would


class QuerySet(StrictModel):
    """What to look for: sentences, reference images, or both."""

    sentences: list[Sentence] = Field(default_factory=list, max_length=64, description="what to look for, in words")
    images: list[str] = Field(default_factory=list, max_length=16, description="reference images: paths on the server")

    @model_validator(mode="after")
    def _has_queries(self) -> QuerySet:
        if not self.sentences and not self.images:
            raise ValueError("give at least one sentence or reference image")
        return self


class StreamRetention(StrictModel):
    """Limits on what is kept: oldest data goes first. Unset limits keep everything. A stream's own
    (`[streams.retention]`) apply to its data only, on top of the global `[retention]` ones."""

    events_max_age_days: float | None = Field(None, gt=0, description="event log entries older than this are deleted")
    events_max_bytes: int | None = Field(None, ge=0, description="the event log's JSON is kept under this many bytes")
    highlights_max_age_days: float | None = Field(None, gt=0, description="highlights started longer ago are deleted, "
                                                  "with their thumbnails and clips (open ones never)")
    thumbnails_max_bytes: int | None = Field(None, ge=0, description="thumbnails are kept under this many bytes; "
                                             "older highlights lose theirs")
    clips_max_bytes: int | None = Field(None, ge=0, description="clip files are kept under this many bytes; older highlights lose theirs")


class StreamSpec(QuerySet):
    """One stream: where its video comes from and what to look for in it."""

    name: str = Field(pattern=STREAM_NAME, description="unique; letters, digits, '_', '.', '-'")
    source: str = Field(min_length=1, max_length=2048, description="rtsp://, rtsps://, http(s)://, .m3u8; local paths if allowed")
    fps: float = Field(2.0, gt=0, le=30, description="frames sampled per second")
    options: SourceSettings = Field(default_factory=SourceSettings)
    rescan: bool = Field(False, description="local files: read again at every start, even if already read to the end "
                                            "with the same file and queries")
    retention: StreamRetention | None = Field(None, description="this stream's own limits, as in [retention] (without "
                                              "interval_seconds); the global ones apply too, the stricter wins")


class ServerSettings(StrictModel):
    host: str = Field("127.0.0.1", description="0.0.0.0 to serve the network (then a token is required)")
    port: int = Field(8080, ge=0, le=65535, description="TCP port to listen on")
    token: str | None = Field(None, min_length=16, description="an admin API bearer token; unset: one is generated into data_dir (cliplive token)")
    allow_local_sources: bool = False  # API may name local files, file:, devices and rtsp-listen://
    data_dir: Path = Path("cliplive-data")  # relative to the config file
    buffer_minutes: float = Field(2.0, ge=0, le=60, description="rolling packet buffer per live stream, for clips")
    min_free_mb: int = Field(256, ge=0, le=2**30, description="below this much free space under data_dir, clips and "
                             "thumbnails are not written (events still are), so the database does not fill; 0: off")
    max_body_bytes: int = Field(64 * 1024, ge=1024, le=16 * 1024 * 1024, description="largest request body accepted")
    cors_origins: list[str] = Field(default_factory=list)  # CORS stays off unless origins are listed
    max_replay_events: int = Field(10_000, ge=1, le=10_000_000, description="most stored events one event-stream "
                                   "connection replays; a client asking for more first gets a replay_truncated notice")
    max_concurrent_replays: int = Field(4, ge=1, le=256, description="replay reads (a page of stored events each) run at "
                                        "once; other replaying clients wait their turn")

    @field_validator("host")
    @classmethod
    def _host(cls, host: str) -> str:
        try:
            check_host(host)
        except InputError as e:
            raise ValueError(str(e)) from None
        return host


class RetentionSettings(StreamRetention):
    """What the service keeps, all streams together: oldest data goes first. Unset limits keep everything."""

    interval_seconds: float = Field(60.0, gt=0, le=86_400, description="how often the limits are applied")


class Config(StrictModel):
    server: ServerSettings = Field(default_factory=ServerSettings)
    encoder: EncoderSpec = Field(default_factory=EncoderSpec)  # the CLI's encoder options, as one table
    segmenter: SegmenterConfig = Field(default_factory=SegmenterConfig)
    streams: list[StreamSpec] = Field(default_factory=list)
    webhooks: list[dict[str, Any]] = Field(default_factory=list)  # passed to cliplive.server.sinks.WebhookSink
    mqtt: dict[str, Any] | None = None  # passed to cliplive.server.sinks.MqttSink
    retention: RetentionSettings = Field(default_factory=RetentionSettings)

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


def describe_errors(error: ValidationError, model: type | None = None) -> str:
    """One line: `where: what` for each problem, in people's words: `streams.0.fps: must be greater than 0`,
    `server.prot: unknown option 'prot' (did you mean 'port'?)`, `streams.0.name: is required`."""
    model = model or Config
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {_plain(e, model)}" for e in error.errors())


def _plain(error: dict, model: type) -> str:
    """One pydantic error's message, as a person would say it."""
    kind, loc = error["type"], error["loc"]
    if kind in ("extra_forbidden", "unexpected_keyword_argument") and loc:
        key = str(loc[-1])
        known = _option_names(model, loc[:-1])
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        return f"unknown option {key!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
    if kind in ("missing", "missing_argument"):
        return "is required"
    message = error["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            return message[len(prefix):]
    return re.sub(r"^(Input|String|List|Value|Dictionary|Tuple|Set) should( have| be| match)?",
                  lambda m: "must" + (m.group(2) or ""), message)


def _option_names(model: type, loc: tuple) -> list[str]:
    """The option names of the table at `loc` in `model` (list indices skipped); [] when unknown."""
    for part in loc:
        if isinstance(part, int):
            continue
        hints = _hints(model)
        if part not in hints:
            return []
        model = table_type(hints[part])
        if model is None:
            return []
    return list(_hints(model))


def _hints(model: type) -> dict[str, Any]:
    if isinstance(model, type) and issubclass(model, BaseModel):
        return {name: f.annotation for name, f in model.model_fields.items()}
    if dataclasses.is_dataclass(model):
        return typing.get_type_hints(model)
    return {}


def table_type(annotation: Any) -> type | None:
    """The model or dataclass an annotation holds (through list[...] and ... | None), if any."""
    if _hints(annotation):
        return annotation
    for arg in typing.get_args(annotation):
        if (inner := table_type(arg)) is not None:
            return inner
    return None


def check_source(source: str, allow_local: bool, resolve: Resolver = socket.getaddrinfo) -> str:
    """The one check of what an API client may make the server open; the source as it is to be stored
    (its scheme in lower case). Refused: anything but rtsp(s)/http(s) URLs with a host, and hosts that are
    or resolve to loopback, link-local, unspecified, multicast or cloud metadata addresses (private ranges
    are fine: cameras live there), unless the config allows local sources (files, file:, devices,
    rtsp-listen://, any host). It resolves the host (blocking: call it in a thread from async code); the
    sources of API streams check their host again before every connection (`SourceOptions.allow_local`)."""
    if any(ord(c) < 33 or c == "\x7f" for c in source):
        raise InputError("source must not contain spaces or control characters")
    source = lower_scheme(source)
    try:
        parts = urlsplit(source)
        scheme, host = (parts.scheme if "://" in source else ""), parts.hostname
    except ValueError as e:
        raise InputError(f"source URL is not valid: {e}") from None
    if scheme in NETWORK_SCHEMES:
        if not host:
            raise InputError(f"source URL has no host: {source!r}")
        if not allow_local:
            check_source_host(source, resolve)
    elif not allow_local:
        allowed = ", ".join(f"{s}://" for s in NETWORK_SCHEMES)
        raise InputError(f"source refused: only {allowed} URLs are allowed (the server's config does not allow local sources)")
    source_kind(source)  # the remaining checks: a supported scheme, an existing file
    return source


HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def check_host(host: str) -> None:
    """An address to bind: an IP address, or a host name whose last label is not all digits (999.1.1.1 is
    neither)."""
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    labels = host.removesuffix(".").split(".")
    if not (len(host) <= 253 and all(HOST_LABEL.fullmatch(label) for label in labels) and not labels[-1].isdigit()):
        raise InputError(f"host must be an IP address or a host name, not {host!r}")


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

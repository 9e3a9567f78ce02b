"""What the highlighter tells the world: live highlight events and finished segments.

Events are flat JSON objects in an envelope (`schema`, `version`, `kind`), shaped like Frigate NVR's
MQTT events (`type` new/update/end, `end` null while open) so home-automation users can consume them
as they are. `kind` says what an event is about; consumers skip kinds they do not know, so new kinds
(stream `status` events) can join the same stream without breaking v1 consumers.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Literal

SCHEMA_NAME = "cliplive.event"
SCHEMA_VERSION = 1  # bumped only for changes that break v1 consumers


def _time(t: float) -> float:
    return round(float(t), 3)


def _score(s: float) -> float:
    return round(float(s), 4)


@dataclass(frozen=True)
class HighlightEvent:
    """A highlight segment was confirmed (`new`), got a better frame (`update`) or is final (`end`)."""

    type: Literal["new", "update", "end"]
    id: str
    stream: str
    start: float
    end: float | None  # None until the `end` event
    score: float  # peak probability over the segment's frames
    query: str
    query_index: int
    best_frame_ts: float
    wall_start: float | None = None  # Unix time at which `start` was live (live streams; set by the pipeline)
    wall_end: float | None = None  # ... and `end`
    wall_time: float = field(default_factory=time.time)  # when the event was emitted

    def to_dict(self) -> dict:
        return {
            "schema": SCHEMA_NAME,
            "version": SCHEMA_VERSION,
            "kind": "highlight",
            "type": self.type,
            "id": self.id,
            "stream": self.stream,
            "start": _time(self.start),
            "end": None if self.end is None else _time(self.end),
            "score": _score(self.score),
            "query": self.query,
            "query_index": self.query_index,
            "best_frame_ts": _time(self.best_frame_ts),
            "wall_start": None if self.wall_start is None else _time(self.wall_start),
            "wall_end": None if self.wall_end is None else _time(self.wall_end),
            "wall_time": _time(self.wall_time),
        }

    def to_json(self) -> str:
        """One line, for JSON Lines files, MQTT payloads and server-sent events."""
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False)


def segment_id(stream: str, number: int) -> str:
    """The id of a stream's `number`-th highlight (from 1): in its events and in summaries alike."""
    return f"{stream}-{number}"


@dataclass(frozen=True)
class Segment:
    """A finished highlight: [start, end) seconds of media time, matching one query."""

    start: float
    end: float
    score: float
    query: str
    query_index: int
    best_frame_ts: float
    id: str

    def to_dict(self) -> dict:
        return {
            "start": _time(self.start),
            "end": _time(self.end),
            "score": _score(self.score),
            "query": self.query,
            "query_index": self.query_index,
            "best_frame_ts": _time(self.best_frame_ts),
            "id": self.id,
        }


@dataclass(frozen=True)
class StatusEvent:
    """A stream's connection changed state; `detail` says why (error, attempt, backoff delay...)."""

    stream: str
    state: Literal["connecting", "live", "stalled", "reconnecting", "failed", "ended"]
    detail: dict = field(default_factory=dict)
    wall_time: float = field(default_factory=time.time)

    def to_dict(self) -> dict:
        return {
            "schema": SCHEMA_NAME,
            "version": SCHEMA_VERSION,
            "kind": "status",
            "stream": self.stream,
            "state": self.state,
            "detail": self.detail,
            "wall_time": _time(self.wall_time),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False)


def metrics_event(snapshot) -> dict:
    """A metrics snapshot (a dataclass: the pipeline's) in the event envelope."""
    return {"schema": SCHEMA_NAME, "version": SCHEMA_VERSION, "kind": "metrics", "wall_time": _time(time.time()), **asdict(snapshot)}


def load_schema() -> dict:
    """The JSON Schema of the event stream (ships as package data)."""
    return json.loads(resources.files(__package__).joinpath("events.schema.json").read_text(encoding="utf-8"))

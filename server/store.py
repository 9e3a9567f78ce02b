"""The service's SQLite database: streams, highlights and the event log.

WAL mode with `synchronous=NORMAL`: a commit is one write() into the WAL, no fsync, so it costs tens of
microseconds and can run on the event loop. A committed transaction survives the process being killed
(`kill -9`: the data is in the OS's page cache); only an OS crash or power loss may lose the last
commits, which `synchronous=FULL` (an fsync per commit, milliseconds) would also protect. The service
commits each event before fanning it out, so every event a client has seen is on disk.

Event ids come from AUTOINCREMENT: strictly increasing, never reused, continuing across restarts.
One connection, used from the event loop's thread only.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS streams (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,                  -- the StreamSpec as JSON
    origin TEXT NOT NULL,                -- 'config' or 'api'
    created REAL NOT NULL,
    deleted REAL                         -- set by DELETE: not restarted, its highlights stay
);
CREATE TABLE IF NOT EXISTS highlights (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    stream TEXT NOT NULL,
    segment TEXT NOT NULL,               -- the segmenter's id: unique only within one run of the stream
    source TEXT NOT NULL,                -- what it was seen in, for clips cut after the stream is gone
    query TEXT NOT NULL,
    query_index INTEGER NOT NULL,
    start REAL NOT NULL,                 -- media time, seconds
    "end" REAL,
    score REAL NOT NULL,
    best_frame_ts REAL NOT NULL,
    wall_start REAL NOT NULL,            -- Unix time
    wall_end REAL,
    state TEXT NOT NULL,                 -- 'open', 'ended', or 'interrupted' (the server died while open)
    thumbnail BLOB                       -- JPEG of the best frame
);
CREATE INDEX IF NOT EXISTS highlights_open ON highlights (stream, segment) WHERE state = 'open';
CREATE INDEX IF NOT EXISTS highlights_time ON highlights (wall_start);
CREATE TABLE IF NOT EXISTS scanned_files (
    stream TEXT PRIMARY KEY,
    key TEXT NOT NULL,                   -- what was scanned: the file (path, size, mtime) and the queries, as JSON
    wall REAL NOT NULL                   -- when the scan reached the file's end
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    stream TEXT,
    kind TEXT NOT NULL,
    wall REAL NOT NULL,
    body TEXT NOT NULL                   -- the event as sent, without its id
);
"""

HIGHLIGHT_COLUMNS = ("id, stream, source, query, query_index, start, \"end\", score, best_frame_ts, wall_start, wall_end, "
                     "state, thumbnail IS NOT NULL")


@dataclass(frozen=True)
class StoredEvent:
    id: int
    data: dict  # the event as sent, `event_id` included

    @property
    def stream(self) -> str | None:
        return self.data.get("stream")


@dataclass(frozen=True)
class HighlightRow:
    id: int
    stream: str
    source: str
    query: str
    query_index: int
    start: float
    end: float | None
    score: float
    best_frame_ts: float
    wall_start: float
    wall_end: float | None
    state: str
    has_thumbnail: bool


def _owner_only(path: Path) -> None:
    """The database keeps stream specs, camera passwords included: it is created (or made) readable by its
    owner only (0600) before SQLite opens it; SQLite gives its -wal and -shm files the database's mode."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if p.exists() and p.stat().st_mode & 0o077:
            os.chmod(p, 0o600)


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        if str(path) != ":memory:":
            _owner_only(self.path)
        self.db = sqlite3.connect(self.path, isolation_level=None)  # autocommit; transactions are explicit
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA busy_timeout=5000")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # --- streams ---------------------------------------------------------------------------------

    def save_stream(self, name: str, spec: dict, origin: str) -> None:
        self.db.execute(
            "INSERT INTO streams (name, spec, origin, created) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, origin = excluded.origin, deleted = NULL",
            (name, json.dumps(spec), origin, time.time()),
        )

    def delete_stream(self, name: str) -> None:
        self.db.execute("UPDATE streams SET deleted = ? WHERE name = ?", (time.time(), name))

    def active_streams(self) -> list[tuple[dict, str]]:
        """(spec, origin) of every stream not deleted, oldest first."""
        rows = self.db.execute("SELECT spec, origin FROM streams WHERE deleted IS NULL ORDER BY created, name")
        return [(json.loads(spec), origin) for spec, origin in rows]

    def mark_scanned(self, stream: str, key: str) -> None:
        """A file stream was read to its end with `key` (see `Service`): not read again at restarts."""
        self.db.execute("INSERT INTO scanned_files (stream, key, wall) VALUES (?, ?, ?) "
                        "ON CONFLICT (stream) DO UPDATE SET key = excluded.key, wall = excluded.wall", (stream, key, time.time()))

    def scanned(self, stream: str) -> str | None:
        """The key of the stream's last complete file scan, if any."""
        row = self.db.execute("SELECT key FROM scanned_files WHERE stream = ?", (stream,)).fetchone()
        return row[0] if row else None

    # --- events ----------------------------------------------------------------------------------

    def append_event(self, event: dict) -> int:
        cursor = self.db.execute(
            "INSERT INTO events (stream, kind, wall, body) VALUES (?, ?, ?, ?)",
            (event.get("stream"), event["kind"], time.time(), json.dumps(event, separators=(",", ":"), ensure_ascii=False)),
        )
        return cursor.lastrowid

    def events_after(self, after: int, limit: int = 500, stream: str | None = None) -> list[StoredEvent]:
        """Events with id > `after`, oldest first."""
        if stream is None:
            rows = self.db.execute("SELECT id, body FROM events WHERE id > ? ORDER BY id LIMIT ?", (after, limit))
        else:
            rows = self.db.execute("SELECT id, body FROM events WHERE id > ? AND stream = ? ORDER BY id LIMIT ?", (after, stream, limit))
        return [StoredEvent(id, {"event_id": id, **json.loads(body)}) for id, body in rows]

    # --- highlights ------------------------------------------------------------------------------

    def open_highlight(self, stream: str, segment: str) -> int | None:
        row = self.db.execute("SELECT id FROM highlights WHERE stream = ? AND segment = ? AND state = 'open'",
                              (stream, segment)).fetchone()
        return row[0] if row else None

    def insert_highlight(self, event: dict, source: str, wall_start: float) -> int:
        cursor = self.db.execute(
            "INSERT INTO highlights (stream, segment, source, query, query_index, start, score, best_frame_ts, wall_start, state) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'open')",
            (event["stream"], event["id"], source, event["query"], event["query_index"], event["start"], event["score"],
             event["best_frame_ts"], wall_start),
        )
        return cursor.lastrowid

    def update_highlight(self, highlight_id: int, event: dict, wall_end: float | None) -> None:
        """An `update` (wall_end None) or `end` event of an open highlight."""
        self.db.execute(
            "UPDATE highlights SET score = ?, best_frame_ts = ?, \"end\" = ?, wall_end = ?, state = ? WHERE id = ?",
            (event["score"], event["best_frame_ts"], event["end"], wall_end, "open" if event["end"] is None else "ended", highlight_id),
        )

    def interrupt_open_highlights(self) -> list[HighlightRow]:
        """Highlights left open by a server that died: marked interrupted, ending at their best frame (the
        last moment known to be in them), and returned."""
        ids = [row[0] for row in self.db.execute(
            "UPDATE highlights SET state = 'interrupted', \"end\" = max(start, best_frame_ts), "
            "wall_end = wall_start + max(start, best_frame_ts) - start WHERE state = 'open' RETURNING id")]
        return self._highlights(f"WHERE id IN ({','.join('?' * len(ids))}) ORDER BY id", tuple(ids)) if ids else []

    def highlight(self, highlight_id: int) -> HighlightRow | None:
        rows = self._highlights("WHERE id = ?", (highlight_id,))
        return rows[0] if rows else None

    def highlights(self, stream: str | None = None, query: str | None = None, since: float | None = None,
                   until: float | None = None, before_id: int | None = None, limit: int = 100) -> list[HighlightRow]:
        """Newest first. `since`/`until` (Unix time) keep highlights overlapping that interval."""
        filters = [("stream = ?", stream), ("query = ?", query), ("(wall_end IS NULL OR wall_end >= ?)", since),
                   ("wall_start <= ?", until), ("id < ?", before_id)]
        used = [(clause, value) for clause, value in filters if value is not None]
        where = "WHERE " + " AND ".join(clause for clause, _ in used) if used else ""
        return self._highlights(f"{where} ORDER BY id DESC LIMIT ?", (*(value for _, value in used), limit))

    def set_thumbnail(self, highlight_id: int, jpeg: bytes) -> None:
        self.db.execute("UPDATE highlights SET thumbnail = ? WHERE id = ?", (jpeg, highlight_id))

    def thumbnail(self, highlight_id: int) -> bytes | None:
        row = self.db.execute("SELECT thumbnail FROM highlights WHERE id = ?", (highlight_id,)).fetchone()
        return row[0] if row else None

    def _highlights(self, tail: str, params: tuple) -> list[HighlightRow]:
        rows = self.db.execute(f"SELECT {HIGHLIGHT_COLUMNS} FROM highlights {tail}", params)
        return [HighlightRow(*row[:-1], has_thumbnail=bool(row[-1])) for row in rows]

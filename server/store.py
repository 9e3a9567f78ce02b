"""The service's SQLite database: streams, highlights and the event log.

WAL mode with `synchronous=NORMAL`: a commit is one write() into the WAL, no fsync, so it costs tens of
microseconds and can run on the event loop. A committed transaction survives the process being killed
(`kill -9`: the data is in the OS's page cache); only an OS crash or power loss may lose the last
commits, which `synchronous=FULL` (an fsync per commit, milliseconds) would also protect. The service
commits each event before fanning it out, so every event a client has seen is on disk.

Event ids come from AUTOINCREMENT: strictly increasing, never reused, continuing across restarts.
One connection, used from the event loop's thread only, does every write; long reads (replays, retention's
measurements) run in worker threads on read-only connections of their own (`StoreReader`): WAL lets them
read while the loop writes. New databases use incremental auto-vacuum, so space freed by retention
(cliplive.server.retention) goes back to the file system.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
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
CREATE INDEX IF NOT EXISTS events_stream ON events (stream, id);  -- per-stream replays and retention
"""

WAL_SIZE_LIMIT = 64 * 1024 * 1024

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
        self.db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # takes effect on a new database only (before its tables)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")  # a checkpointed WAL shrinks back to this
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA busy_timeout=5000")
        self.db.executescript(SCHEMA)
        self.vacuums = self.db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental: older databases are not
        self.reader = StoreReader(self.path)

    def close(self) -> None:
        self.reader.close()
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self.db.execute("COMMIT")  # on a full disk, this is what fails (the WAL is written at commit)
        except BaseException:
            if self.db.in_transaction:  # SQLite rolls back by itself after some errors (SQLITE_FULL)
                self.db.execute("ROLLBACK")
            raise

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
        return [StoredEvent(id, {"event_id": id, **json.loads(body)}) for id, body in _event_rows(self.db, after, limit, stream)]

    def delete_events_through(self, last_id: int, batch: int, stream: str | None = None) -> int:
        """Delete up to `batch` of the oldest events with id <= `last_id` (of one stream, or all: retention); how
        many went."""
        where, params = _of_stream("id <= ?", (last_id,), stream)
        return self.db.execute(f"DELETE FROM events WHERE id IN (SELECT id FROM events WHERE {where} ORDER BY id LIMIT ?)",
                               (*params, batch)).rowcount

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

    def ended_highlights_started_before(self, wall: float, limit: int, stream: str | None = None) -> list[int]:
        """Ids of up to `limit` of the oldest highlights (of one stream, or all) started before `wall` (Unix
        time) that are not open."""
        where, params = _of_stream("wall_start < ? AND state != 'open'", (wall,), stream)
        return [row[0] for row in self.db.execute(
            f"SELECT id FROM highlights WHERE {where} ORDER BY wall_start LIMIT ?", (*params, limit))]

    def delete_ended_highlights(self, ids: list[int]) -> list[int]:
        """Delete these highlights (their thumbnails with them), open ones excepted; the ids deleted."""
        marks = ",".join("?" * len(ids))
        return [row[0] for row in self.db.execute(
            f"DELETE FROM highlights WHERE id IN ({marks}) AND state != 'open' RETURNING id", ids)] if ids else []

    def drop_thumbnails(self, ids: list[int]) -> None:
        """Forget these highlights' thumbnails, open ones excepted (an open highlight's may still change)."""
        self.db.execute(f"UPDATE highlights SET thumbnail = NULL WHERE id IN ({','.join('?' * len(ids))}) AND state != 'open'", ids)

    def reclaim_pages(self, pages: int) -> int:
        """Give up to `pages` free pages back to the file system; free pages left (0 for a database made
        without incremental auto-vacuum: it keeps its free pages for reuse)."""
        if not self.vacuums:
            return 0
        self.db.executescript(f"PRAGMA incremental_vacuum({int(pages)});")  # execute() would step it once: one page
        return self.db.execute("PRAGMA freelist_count").fetchone()[0]

    def _highlights(self, tail: str, params: tuple) -> list[HighlightRow]:
        rows = self.db.execute(f"SELECT {HIGHLIGHT_COLUMNS} FROM highlights {tail}", params)
        return [HighlightRow(*row[:-1], has_thumbnail=bool(row[-1])) for row in rows]


def _event_rows(db: sqlite3.Connection, after: int, limit: int, stream: str | None) -> sqlite3.Cursor:
    """(id, body) of the events with id > `after` (of one stream, or all), oldest first."""
    if stream is None:
        return db.execute("SELECT id, body FROM events WHERE id > ? ORDER BY id LIMIT ?", (after, limit))
    return db.execute("SELECT id, body FROM events WHERE id > ? AND stream = ? ORDER BY id LIMIT ?", (after, stream, limit))


def _of_stream(where: str, params: tuple, stream: str | None) -> tuple[str, tuple]:
    """A WHERE clause and its parameters, narrowed to one stream's rows when `stream` is given."""
    return (where, params) if stream is None else (f"{where} AND stream = ?", (*params, stream))


class StoreReader:
    """Reads for worker threads (`asyncio.to_thread`): replays and retention's measurements, which may take
    a while and must not hold up the event loop. Read-only connections, in a small pool: each is used by one
    thread at a time (taken out, put back after), which is what `check_same_thread=False` needs."""

    def __init__(self, path: Path):
        self.uri = f"{path.resolve().as_uri()}?mode=ro"
        self._idle: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    @contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            db = self._idle.pop() if self._idle else None
        if db is None:
            db = sqlite3.connect(self.uri, uri=True, check_same_thread=False)
        try:
            yield db
        finally:
            with self._lock:
                if self._closed:
                    db.close()
                else:
                    self._idle.append(db)

    def close(self) -> None:
        """Close the idle connections; those in use close when given back."""
        with self._lock:
            self._closed = True
            for db in self._idle:
                db.close()
            self._idle.clear()

    def event_texts_after(self, after: int, limit: int, stream: str | None) -> list[tuple[int, str]]:
        """(id, the event as JSON, `event_id` first) after `after`, oldest first: what a replay sends. The
        stored JSON is spliced, not decoded and encoded again, so a replay costs little CPU."""
        with self.connection() as db:
            return [(id, f'{{"event_id":{id},{body[1:]}') for id, body in _event_rows(db, after, limit, stream)]

    def replay_start(self, after: int, stream: str | None, max_events: int) -> tuple[int, int]:
        """Where a replay of the events after `after` starts so that it gives at most `max_events`: (the id
        to replay after, how many events that skips)."""
        with self.connection() as db:
            where, params = ("id > ?", (after,)) if stream is None else ("id > ? AND stream = ?", (after, stream))
            row = db.execute(f"SELECT id FROM events WHERE {where} ORDER BY id DESC LIMIT 1 OFFSET ?", (*params, max_events)).fetchone()
            if row is None:
                return after, 0
            skipped = db.execute(f"SELECT count(*) FROM events WHERE {where} AND id <= ?", (*params, row[0])).fetchone()[0]
            return row[0], skipped

    def last_event_to_drop(self, before_wall: float | None, max_bytes: int | None, stream: str | None = None) -> int | None:
        """The newest event that retention drops (it and all older ones, of one stream or all): stored before
        `before_wall` (Unix time), or beyond the newest `max_bytes` of event JSON; None when none is."""
        with self.connection() as db:
            found = []
            if before_wall is not None:
                where, params = _of_stream("wall < ?", (before_wall,), stream)
                found.append(db.execute(f"SELECT max(id) FROM events WHERE {where}", params).fetchone()[0])
            if max_bytes is not None:
                where, params = _of_stream("1", (), stream)
                found.append(db.execute("SELECT max(id) FROM (SELECT id, sum(length(CAST(body AS BLOB))) OVER (ORDER BY id DESC) "
                                        f"AS newer FROM events WHERE {where}) WHERE newer > ?", (*params, max_bytes)).fetchone()[0])
            return max((last for last in found if last is not None), default=None)

    def thumbnails_beyond(self, max_bytes: int, stream: str | None = None) -> list[int]:
        """Ids of the highlights (of one stream, or all), oldest first, whose thumbnails lie beyond the newest
        `max_bytes` of thumbnails (open highlights' count, but are never among them)."""
        where, params = _of_stream("thumbnail IS NOT NULL", (), stream)
        with self.connection() as db:
            return [row[0] for row in db.execute(
                "SELECT id FROM (SELECT id, state, sum(length(thumbnail)) OVER (ORDER BY id DESC) AS newer FROM highlights "
                f"WHERE {where}) WHERE newer > ? AND state != 'open' ORDER BY id", (*params, max_bytes))]

    def highlight_streams(self, ids: list[int]) -> dict[int, str]:
        """The stream of each of these highlights that exists."""
        with self.connection() as db:
            found: dict[int, str] = {}
            for i in range(0, len(ids), 500):  # SQLite caps the number of parameters
                chunk = ids[i:i + 500]
                found.update(db.execute(f"SELECT id, stream FROM highlights WHERE id IN ({','.join('?' * len(chunk))})", chunk))
            return found


def checkpoint(path: Path) -> bool:
    """Copy the WAL into the database and truncate it (space freed by deletions goes back to the file system),
    on a connection of its own, in a worker thread. It does not wait: if readers or the writer are busy, it
    returns False and the next call tries again. A passive pass first, so the truncating one, which holds
    the write lock, has little left to copy."""
    db = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return not busy
    except sqlite3.OperationalError:  # locked: next time
        return False
    finally:
        db.close()

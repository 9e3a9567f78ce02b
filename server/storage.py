"""What the service does when its disk fills: events wait in memory, clips and thumbnails stop early.

- `Backlog`: events the store could not write, in order and bounded (the oldest go first, counted). The
  service writes them, ids assigned then, and only then sends them, when the store takes writes again.
- `StorageHealth`: whether the store writes, since when and why, with the counters `/metrics` shows and the
  `storage` object of each stream's API answer.
- `DiskWatermark`: free space under the data dir against `min_free_mb`, measured at most once a second.
  Below it clips and thumbnails (the big writes) are skipped, so that the small event rows still fit.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cliplive.models.errors import Unavailable, reason
from cliplive.server.store import Store

log = logging.getLogger(__name__)

BACKLOG_EVENTS = 2000  # events kept in memory while the store cannot write: minutes of a busy server
RETRY_SECONDS = 2.0  # besides at each new event, the backlog is retried this often
DISK_CHECK_SECONDS = 1.0


class StorageUnavailable(Unavailable):
    """The store cannot write (a full disk...): HTTP 503, CLI exit 1."""


@dataclass(frozen=True)
class StorageStatus:
    """A stream's view of the store, as its API answer shows it."""

    ok: bool  # false while the store cannot write: events wait in memory, in order
    error: str | None  # why the last write failed (e.g. "database or disk is full")
    since: float | None  # Unix time the writes began to fail
    backlog: int  # this stream's events waiting to be stored, then sent
    low_disk: bool  # free space under min_free_mb: clips and thumbnails are skipped


@dataclass(frozen=True)
class StorageSnapshot:
    """The store's health for `/metrics`."""

    failing: bool
    write_errors: int
    backlog: int
    dropped: int
    low_disk: bool
    skipped: dict[str, int]  # clips and thumbnails not written because of low disk


class Backlog:
    """Events not stored yet, oldest first, at most `capacity` (then the oldest is dropped and counted)."""

    def __init__(self, capacity: int = BACKLOG_EVENTS):
        self.items: deque[tuple[dict, Any]] = deque(maxlen=capacity)
        self.dropped = 0

    def __len__(self) -> int:
        return len(self.items)

    def add(self, data: dict, owner: Any) -> None:
        """`owner`: what the event's writer needs besides it (the service's stream), kept alongside."""
        if len(self.items) == self.items.maxlen:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 100 == 0:
                log.error("event backlog full (%d): the oldest unstored events are dropped (%d so far)", len(self.items), self.dropped)
        self.items.append((data, owner))

    def first(self) -> tuple[dict, Any]:
        return self.items[0]

    def pop(self) -> None:
        """The first event was stored (or given up on)."""
        self.items.popleft()

    def count(self, stream: str) -> int:
        return sum(data.get("stream") == stream for data, _ in self.items)


class StorageHealth:
    """The outcome of the store's writes: failing from the first failed write until one succeeds again."""

    def __init__(self):
        self.error: str | None = None
        self.since: float | None = None
        self.write_errors = 0

    @property
    def failing(self) -> bool:
        return self.error is not None

    def failed(self, error: sqlite3.Error, what: str) -> None:
        self.write_errors += 1
        if not self.failing:  # once per outage, not once per event
            log.error("store cannot write %s (%s): events wait in memory until it can", what, error)
            self.since = time.time()
        self.error = reason(error)

    def recovered(self) -> None:
        if self.failing:
            log.warning("store writes again (after %.0f s)", time.time() - self.since)
        self.error = self.since = None


class DiskWatermark:
    """Whether free space under `path` is below `min_free_mb` (0: never), measured at most once a second."""

    def __init__(self, path: Path, min_free_mb: int, every: float = DISK_CHECK_SECONDS):
        self.path, self.min_free_bytes, self.every = path, min_free_mb * 2**20, every
        self.skipped = {"clip": 0, "thumbnail": 0}
        self._low = False
        self._checked = -float("inf")

    @property
    def low(self) -> bool:
        now = time.monotonic()
        if self.min_free_bytes and now - self._checked >= self.every:
            self._checked = now
            self._measure()
        return self._low

    def allows(self, what: str) -> bool:
        """Whether a `what` ("clip", "thumbnail") may be written now; counted when not."""
        if self.low:
            self.skipped[what] += 1
            return False
        return True

    def _measure(self) -> None:
        try:
            free = shutil.disk_usage(self.path).free
        except OSError as e:  # e.g. the data dir's volume gone: the writes themselves will say
            log.warning("free space under %s unknown: %s", self.path, e)
            return
        low = free < self.min_free_bytes
        if low != self._low:
            log.warning("free space under %s: %d MiB, %s min_free_mb (%d): clips and thumbnails %s", self.path,
                        free // 2**20, "below" if low else "above", self.min_free_bytes // 2**20, "stop" if low else "resume")
        self._low = low


@contextmanager
def storage_errors() -> Iterator[None]:
    """Around a store write a request needs: its failure is a 503 (`StorageUnavailable`), not a bug."""
    try:
        yield
    except (sqlite3.Error, OSError) as e:
        raise StorageUnavailable(f"storage unavailable: {reason(e)}") from e


def open_store(data_dir: Path) -> Store:
    """The data dir's store, made if new; a disk that cannot take it is one `StorageUnavailable` line."""
    with storage_errors():
        data_dir.mkdir(parents=True, exist_ok=True)
        return Store(data_dir / "cliplive.db")

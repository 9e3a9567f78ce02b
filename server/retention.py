"""Retention: the limits of `[retention]` (`cliplive.server.config.RetentionSettings`), applied continuously.

A background task of the service applies them at start and then every `interval_seconds`, oldest data
first: the event log by age and by bytes; highlights by age (row, thumbnail and clip; open highlights
never); thumbnails and clips by bytes (older highlights lose theirs and stay). Measuring (scans of the
log, of the clips folder) runs in worker threads, on the store's read-only connections; deletions run on
the loop's thread, the store's one writer, in small batches with a yield between them, so events keep
flowing meanwhile. Clip files whose highlight is gone (deleted while its clip was being cut) go too.
Freed database pages go back to the file system: incremental vacuum, then a WAL checkpoint that never
waits on the other connections (`cliplive.server.store.checkpoint`).

A stream's own limits (`[streams.retention]`, `cliplive.server.config.StreamRetention`) are applied the
same way to its data only, after the global ones, so the stricter of the two wins. They are asked for at
each pass: a stream that is no longer configured (deleted) keeps only the global limits.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cliplive.server.config import RetentionSettings, StreamRetention
from cliplive.server.store import Store, checkpoint

log = logging.getLogger(__name__)

BATCH = 500  # rows per deletion: a few milliseconds on the loop
VACUUM_PAGES = 1000  # pages given back per step (4 MiB at SQLite's default page size)
DAY = 86_400.0
CLIP_NAME = re.compile(r"(\d+)\.mp4")  # clips are DATA_DIR/clips/{highlight id}.mp4 (temporary files are not)


@dataclass
class Removed:
    """What one pass deleted."""

    events: int = 0
    highlights: int = 0
    thumbnails: int = 0
    clips: int = 0


class Retention:
    def __init__(self, store: Store, clips_dir: Path, settings: RetentionSettings,
                 stream_limits: Callable[[], dict[str, StreamRetention]] = dict):
        """`stream_limits`: the own limits of the streams configured now, by name (called at each pass)."""
        self.store, self.clips_dir, self.settings, self.stream_limits = store, clips_dir, settings, stream_limits

    async def run(self) -> None:
        """Apply the limits now and then every interval, until cancelled. A failed pass (e.g. a full disk
        refusing the deletions' own writes) is logged and the next one tries again."""
        while True:
            try:
                removed = await self.apply()
                if removed != Removed():
                    log.info("retention removed %s", removed)
            except (sqlite3.Error, OSError) as e:  # e.g. a full disk refusing the deletions' own writes: expected
                log.warning("retention pass failed (%s); the next one is in %g s", e, self.settings.interval_seconds)
            except Exception:
                log.exception("retention pass failed; the next one is in %g s", self.settings.interval_seconds)
            await asyncio.sleep(self.settings.interval_seconds)

    async def apply(self) -> Removed:
        """One pass over every limit: the global ones, then each configured stream's own."""
        now, per_stream = time.time(), self.stream_limits()
        removed = Removed()
        # Clips first: unlinking files needs no space, while the database's deletions are writes that a full disk may refuse.
        stream_clip_limits = {name: limits.clips_max_bytes for name, limits in per_stream.items() if limits.clips_max_bytes is not None}
        removed.clips = await asyncio.to_thread(self._trim_clips, self.settings.clips_max_bytes, stream_clip_limits)
        for stream, limits in [(None, self.settings), *per_stream.items()]:
            await self._apply_database_limits(limits, now, stream, removed)
        if removed.events or removed.highlights or removed.thumbnails:
            await self._reclaim_space()
        return removed

    async def _apply_database_limits(self, limits: StreamRetention, now: float, stream: str | None, removed: Removed) -> None:
        """The event, highlight and thumbnail limits, on one stream's data (or, `stream` None, on all); adds
        what went to `removed`."""
        if limits.events_max_age_days is not None or limits.events_max_bytes is not None:
            before = None if limits.events_max_age_days is None else now - limits.events_max_age_days * DAY
            last = await asyncio.to_thread(self.store.reader.last_event_to_drop, before, limits.events_max_bytes, stream)
            if last is not None:
                removed.events += await in_batches(lambda: self.store.delete_events_through(last, BATCH, stream))
        if limits.highlights_max_age_days is not None:
            removed.highlights += await self._delete_highlights_started_before(now - limits.highlights_max_age_days * DAY, stream)
        if limits.thumbnails_max_bytes is not None:
            removed.thumbnails += await self._drop_thumbnails_beyond(limits.thumbnails_max_bytes, stream)

    async def _delete_highlights_started_before(self, wall: float, stream: str | None) -> int:
        deleted = 0
        while ids := self.store.ended_highlights_started_before(wall, BATCH, stream):
            gone = self.store.delete_ended_highlights(ids)
            await asyncio.to_thread(remove_clips, self.clips_dir, gone)
            deleted += len(gone)
        return deleted

    async def _drop_thumbnails_beyond(self, max_bytes: int, stream: str | None) -> int:
        ids = await asyncio.to_thread(self.store.reader.thumbnails_beyond, max_bytes, stream)
        for i in range(0, len(ids), BATCH):
            self.store.drop_thumbnails(ids[i:i + BATCH])
            await asyncio.sleep(0)
        return len(ids)

    def _trim_clips(self, max_bytes: int | None, stream_max_bytes: dict[str, int]) -> int:
        """In a worker thread: remove clips whose highlight is gone, then the oldest highlights' clips beyond
        the newest `max_bytes` of all clips, and beyond the newest `stream_max_bytes[name]` of each of these
        streams' clips; how many were removed."""
        sizes = {}
        for path in self.clips_dir.iterdir():
            if (match := CLIP_NAME.fullmatch(path.name)) and path.is_file():
                sizes[int(match.group(1))] = path.stat().st_size
        streams = self.store.reader.highlight_streams(sorted(sizes))
        doomed = {i for i in sizes if i not in streams}
        newest_first = sorted(streams, reverse=True)
        if max_bytes is not None:
            doomed.update(beyond(newest_first, sizes, max_bytes))
        for stream, limit in stream_max_bytes.items():
            doomed.update(beyond([i for i in newest_first if streams[i] == stream], sizes, limit))
        remove_clips(self.clips_dir, sorted(doomed))
        return len(doomed)

    async def _reclaim_space(self) -> None:
        while self.store.reclaim_pages(VACUUM_PAGES):
            await asyncio.sleep(0)
        if not await asyncio.to_thread(checkpoint, self.store.path):
            log.debug("WAL checkpoint skipped: the database is busy (the next pass tries again)")


async def in_batches(delete_batch: Callable[[], int]) -> int:
    """Call `delete_batch` until it deletes nothing, yielding to the loop in between; the total deleted."""
    total = 0
    while deleted := delete_batch():
        total += deleted
        await asyncio.sleep(0)
    return total


def beyond(newest_first: list[int], sizes: dict[int, int], max_bytes: int) -> list[int]:
    """Those of these highlights (newest first) whose clips lie beyond the newest `max_bytes` of them."""
    newer, found = 0, []
    for highlight_id in newest_first:
        newer += sizes[highlight_id]
        if newer > max_bytes:
            found.append(highlight_id)
    return found


def remove_clips(clips_dir: Path, highlight_ids: list[int]) -> None:
    """Remove these highlights' clip files (those that exist)."""
    for highlight_id in highlight_ids:
        (clips_dir / f"{highlight_id}.mp4").unlink(missing_ok=True)

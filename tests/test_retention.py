"""Retention (issue 11, finding 8): the `[retention]` limits delete the oldest data first, never an open
highlight, and give the space back; `DELETE /api/highlights/{id}` removes a highlight, its thumbnail and
its clip. Limits are applied by calling `Retention.apply` (one pass), and once by the service's own
background task. A stream's own `[streams.retention]` limits touch only its data, the global ones still
apply, and the stricter wins."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from test_service import AUTH, TOKEN, stream_spec, wait_for
from cliplive.server.app import create_app
from cliplive.server.config import Config, ConfigError, RetentionSettings, StreamRetention, load_config
from cliplive.server.retention import Removed, Retention
from cliplive.server.service import Service
from cliplive.server.store import Store

DAY = 86_400


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "cliplive.db")
    yield store
    store.close()


@pytest.fixture
def clips(tmp_path) -> Path:
    (tmp_path / "clips").mkdir()
    return tmp_path / "clips"


def add_events(store: Store, count: int, wall: float | None = None, stream: str | None = "cam") -> list[int]:
    ids = [store.append_event({"kind": "status", "stream": stream, "state": "live", "detail": {"pad": "x" * 150}}) for _ in range(count)]
    if wall is not None:
        store.db.execute("UPDATE events SET wall = ? WHERE id BETWEEN ? AND ?", (wall, ids[0], ids[-1]))
    return ids


def add_highlight(store: Store, wall_start: float, ended: bool = True, thumbnail: bytes | None = None,
                  stream: str = "cam") -> int:
    event = {"stream": stream, "id": f"seg-{wall_start}", "query": "a cat", "query_index": 0, "start": 0.0, "score": 1.0,
             "best_frame_ts": 0.5}
    highlight_id = store.insert_highlight(event, "rtsp://cam.local/live", wall_start)
    if ended:
        store.update_highlight(highlight_id, {**event, "end": 1.0}, wall_start + 1)
    if thumbnail is not None:
        store.set_thumbnail(highlight_id, thumbnail)
    return highlight_id


def event_ids(store: Store) -> list[int]:
    return [row[0] for row in store.db.execute("SELECT id FROM events ORDER BY id")]


def file_bytes(db: Path) -> int:
    return sum(os.path.getsize(p) for p in (db, db.with_name(db.name + "-wal")) if p.exists())


async def test_events_go_oldest_first_by_age_and_the_space_goes_back_to_the_disk(store, clips):
    old = add_events(store, 4000, wall=time.time() - 10 * DAY)
    recent = add_events(store, 500, wall=time.time() - 2 * DAY)
    before = file_bytes(store.path)
    removed = await Retention(store, clips, RetentionSettings(events_max_age_days=3)).apply()
    assert removed == Removed(events=len(old))
    assert event_ids(store) == recent
    assert file_bytes(store.path) < before / 3, "freed pages go back to the file system (incremental vacuum, WAL truncated)"
    assert await Retention(store, clips, RetentionSettings(events_max_age_days=3)).apply() == Removed()  # nothing more


async def test_events_go_oldest_first_by_bytes(store, clips):
    ids = add_events(store, 300)
    newest_100 = store.db.execute("SELECT sum(length(CAST(body AS BLOB))) FROM events WHERE id > ?", (ids[199],)).fetchone()[0]
    removed = await Retention(store, clips, RetentionSettings(events_max_bytes=newest_100 + 10)).apply()
    assert removed.events == 200 and event_ids(store) == ids[200:]
    removed = await Retention(store, clips, RetentionSettings(events_max_bytes=newest_100 - 1)).apply()
    assert removed.events == 1 and event_ids(store) == ids[201:]  # one byte over: the oldest one more goes


async def test_old_highlights_go_with_thumbnail_and_clip_but_open_ones_stay(store, clips):
    now = time.time()
    old = [add_highlight(store, now - (20 - i) * DAY, thumbnail=b"jpeg") for i in range(3)]
    old_open = add_highlight(store, now - 30 * DAY, ended=False)
    recent = add_highlight(store, now - DAY, thumbnail=b"jpeg")
    for highlight_id in (*old, recent):
        (clips / f"{highlight_id}.mp4").write_bytes(b"mp4")
    removed = await Retention(store, clips, RetentionSettings(highlights_max_age_days=7)).apply()
    assert removed == Removed(highlights=3)
    assert [row.id for row in store.highlights()] == [recent, old_open]
    assert all(store.thumbnail(i) is None for i in old) and store.thumbnail(recent) == b"jpeg"
    assert sorted(p.name for p in clips.iterdir()) == [f"{recent}.mp4"]


async def test_thumbnails_beyond_the_byte_limit_go_oldest_first_and_their_highlights_stay(store, clips):
    now = time.time()
    ids = [add_highlight(store, now - 100 + i, thumbnail=bytes(1000)) for i in range(3)]
    open_one = add_highlight(store, now - 50, ended=False, thumbnail=bytes(1000))
    ids += [add_highlight(store, now - 10 + i, thumbnail=bytes(1000)) for i in range(2)]
    # Newest first: ids[4], ids[3], open_one (counted, never dropped), then ids[2], ids[1], ids[0] go.
    removed = await Retention(store, clips, RetentionSettings(thumbnails_max_bytes=3500)).apply()
    assert removed == Removed(thumbnails=3)
    assert [store.highlight(i).has_thumbnail for i in ids] == [False, False, False, True, True]
    assert store.highlight(open_one).has_thumbnail and len(store.highlights()) == 6


async def test_clips_beyond_the_byte_limit_go_oldest_first_and_orphan_clips_go(store, clips):
    ids = [add_highlight(store, time.time() - 100 + i) for i in range(5)]
    for highlight_id in ids:
        (clips / f"{highlight_id}.mp4").write_bytes(bytes(1000))
    (clips / "999.mp4").write_bytes(b"a clip whose highlight is gone")
    (clips / ".tmp-7.mp4").write_bytes(b"a clip being written")
    removed = await Retention(store, clips, RetentionSettings(clips_max_bytes=2500)).apply()
    assert removed == Removed(clips=4)
    assert sorted(p.name for p in clips.iterdir()) == sorted([".tmp-7.mp4", f"{ids[3]}.mp4", f"{ids[4]}.mp4"])
    assert len(store.highlights()) == 5  # the highlights stay


# --- per stream ----------------------------------------------------------------------------------


def own_limits(**by_stream: dict) -> Callable[[], dict[str, StreamRetention]]:
    """What the service gives `Retention`: the configured streams' own limits, by name."""
    return lambda: {name: StreamRetention(**limits) for name, limits in by_stream.items()}


def clip_names(clips: Path) -> list[str]:
    return sorted(p.name for p in clips.iterdir())


async def test_a_streams_age_limits_delete_only_its_old_events_and_highlights(store, clips):
    now = time.time()
    _cam_old, yard_old, service_old = (add_events(store, 20, now - 10 * DAY, stream) for stream in ("cam", "yard", None))
    cam_recent = add_events(store, 5, now - DAY)
    cam_highlight, yard_highlight = (add_highlight(store, now - 10 * DAY, stream=stream) for stream in ("cam", "yard"))
    cam_open = add_highlight(store, now - 20 * DAY, ended=False)
    cam_recent_highlight = add_highlight(store, now - DAY)
    for highlight_id in (cam_highlight, yard_highlight, cam_recent_highlight):
        (clips / f"{highlight_id}.mp4").write_bytes(b"mp4")
    retention = Retention(store, clips, RetentionSettings(), own_limits(cam={"events_max_age_days": 3, "highlights_max_age_days": 3}))
    assert await retention.apply() == Removed(events=20, highlights=1)
    assert event_ids(store) == sorted(yard_old + service_old + cam_recent)  # the same age, another stream's: kept
    assert [row.id for row in store.highlights()] == [cam_recent_highlight, cam_open, yard_highlight]  # newest id first
    assert clip_names(clips) == sorted([f"{yard_highlight}.mp4", f"{cam_recent_highlight}.mp4"])
    assert await retention.apply() == Removed()


async def test_a_streams_byte_limits_trim_its_events_thumbnails_and_clips_oldest_first(store, clips):
    now = time.time()
    ids = {stream: [add_highlight(store, now - 100 + i, thumbnail=bytes(1000), stream=stream) for i in range(4)]
           for stream in ("cam", "yard")}
    for highlight_id in ids["cam"] + ids["yard"]:
        (clips / f"{highlight_id}.mp4").write_bytes(bytes(1000))
    cam_events, yard_events = add_events(store, 30, stream="cam"), add_events(store, 30, stream="yard")
    newest_10 = store.db.execute("SELECT sum(length(CAST(body AS BLOB))) FROM events WHERE id > ? AND stream = 'cam'",
                                 (cam_events[19],)).fetchone()[0]
    limits = own_limits(cam={"thumbnails_max_bytes": 2500, "clips_max_bytes": 1500, "events_max_bytes": newest_10})
    assert await Retention(store, clips, RetentionSettings(), limits).apply() == Removed(events=20, thumbnails=2, clips=3)
    assert [store.highlight(i).has_thumbnail for i in ids["cam"]] == [False, False, True, True]
    assert all(store.highlight(i).has_thumbnail for i in ids["yard"])
    assert clip_names(clips) == sorted(f"{i}.mp4" for i in [ids["cam"][-1], *ids["yard"]])
    assert event_ids(store) == sorted(cam_events[20:] + yard_events)
    assert len(store.highlights()) == 8  # the highlights stay


async def test_the_stricter_of_the_global_and_the_streams_own_limits_wins(store, clips):
    now = time.time()
    _six_days = {stream: add_events(store, 10, now - 6 * DAY, stream) for stream in ("cam", "yard", "porch")}
    three_days = {stream: add_events(store, 10, now - 3 * DAY, stream) for stream in ("cam", "yard", "porch")}
    clip_ids = {stream: [add_highlight(store, now - 100 + i, stream=stream) for i in range(4)] for stream in ("cam", "yard")}
    for highlight_id in clip_ids["cam"] + clip_ids["yard"]:
        (clips / f"{highlight_id}.mp4").write_bytes(bytes(1000))
    # Global: 5 days, 5500 bytes of clips (all streams). cam: looser age (8), stricter clips (1500); porch: stricter age (2).
    limits = own_limits(cam={"events_max_age_days": 8, "clips_max_bytes": 1500}, porch={"events_max_age_days": 2})
    removed = await Retention(store, clips, RetentionSettings(events_max_age_days=5, clips_max_bytes=5500), limits).apply()
    assert event_ids(store) == sorted(three_days["cam"] + three_days["yard"])
    # Newest first: yard's 4 and cam's newest fit the global 5500 bytes (cam's 3 older ones go by its own 1500).
    assert clip_names(clips) == sorted(f"{i}.mp4" for i in [clip_ids["cam"][-1], *clip_ids["yard"]])
    assert removed == Removed(events=40, clips=3)


def test_a_bad_stream_retention_value_is_one_clear_config_error(tmp_path):
    path = tmp_path / "cliplive.toml"
    stream = "[[streams]]\nname = 'cam'\nsource = 'rtsp://cam/x'\nsentences = ['x']\n[streams.retention]\n"
    path.write_text(stream + "events_max_age_days = 0")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value) == f"{path}: streams.0.retention.events_max_age_days: must be greater than 0"
    path.write_text(stream + "interval_seconds = 10")  # how often passes run is global only
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value) == f"{path}: streams.0.retention.interval_seconds: unknown option 'interval_seconds'"
    path.write_text(stream + "clips_max_bytes = 1_000_000")
    assert load_config(path).streams[0].retention == StreamRetention(clips_max_bytes=1_000_000)


# --- in the service ------------------------------------------------------------------------------


@pytest.fixture
def make_service(tmp_path, tiny_clip):
    def make(server: dict | None = None, **retention) -> tuple[Service, object]:
        config = Config.model_validate({"server": {"data_dir": str(tmp_path / "data"), **(server or {})}, "retention": retention})
        service = Service(config, tiny_clip)
        return service, create_app(service, TOKEN)

    return make


async def test_the_service_applies_the_limits_continuously(make_service, tmp_path):
    service, app = make_service(events_max_age_days=1, interval_seconds=0.2)
    (tmp_path / "data").mkdir()
    store = Store(tmp_path / "data" / "cliplive.db")
    add_events(store, 50, wall=time.time() - 5 * DAY)
    store.close()
    async with asyncio.timeout(30), app.router.lifespan_context(app):
        async def old_ones_gone():
            return not service.store.events_after(0, 100)

        await wait_for(old_ones_gone, 5, "the retention pass at start")
        store_ids = add_events(service.store, 5, wall=time.time() - 5 * DAY)  # later ones go at a later pass
        assert service.store.events_after(0, 100)
        await wait_for(old_ones_gone, 5, f"events {store_ids} to go at the next pass")


async def test_delete_highlight_removes_row_thumbnail_and_clip_and_refuses_open_or_unknown(make_service):
    service, app = make_service()
    async with asyncio.timeout(30), app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://cliplive", headers=AUTH) as client:
            ended = add_highlight(service.store, time.time() - 60, thumbnail=b"\xff\xd8jpeg")
            still_open = add_highlight(service.store, time.time() - 10, ended=False)
            clip = service.clips_dir / f"{ended}.mp4"
            clip.write_bytes(b"mp4")
            assert (await client.get(f"/api/highlights/{ended}/thumbnail.jpg")).status_code == 200

            response = await client.delete(f"/api/highlights/{ended}")
            assert response.status_code == 204 and response.content == b""
            assert not clip.exists()
            for path in (f"/api/highlights/{ended}", f"/api/highlights/{ended}/thumbnail.jpg", f"/api/highlights/{ended}/clip.mp4"):
                response = await client.get(path)
                assert response.status_code == 404 and response.json()["detail"], path
            again = await client.delete(f"/api/highlights/{ended}")
            assert again.status_code == 404 and again.json() == {"detail": f"not found: highlight {ended}"}

            refused = await client.delete(f"/api/highlights/{still_open}")
            assert refused.status_code == 409
            assert refused.json() == {"detail": f"highlight {still_open} is still open: it can be deleted once it ends"}
            assert service.store.highlight(still_open) is not None
            assert (await client.delete("/api/highlights/0")).status_code == 422
            assert (await client.delete(f"/api/highlights/{ended}", headers={"Authorization": ""})).status_code == 401

            operation = (await client.get("/openapi.json")).json()["paths"]["/api/highlights/{highlight_id}"]["delete"]
            assert {"204", "401", "404", "409", "422"} <= set(operation["responses"])


async def test_an_api_stream_brings_its_own_limits_and_a_deleted_one_keeps_only_the_global_ones(make_service):
    service, app = make_service(server={"allow_local_sources": True}, interval_seconds=3600)  # passes: called here
    async with asyncio.timeout(30), app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://cliplive", headers=AUTH) as client:
            # Old ones first: retention takes ids to follow time (it drops a stream's events up to the newest too old).
            five_days_ago = time.time() - 5 * DAY
            cam_old, other_old = add_events(service.store, 10, five_days_ago), add_events(service.store, 10, five_days_ago, "yard")
            bad = await client.post("/api/streams", json=stream_spec("cam", "rtsp://127.0.0.1:1/x", retention={"clips_max_bytes": -1}))
            assert bad.status_code == 422 and [e["loc"] for e in bad.json()["detail"]] == [["body", "retention", "clips_max_bytes"]]
            spec = stream_spec("cam", "rtsp://127.0.0.1:1/x", retention={"events_max_age_days": 1})
            assert (await client.post("/api/streams", json=spec)).status_code == 201
            patched = await client.patch("/api/streams/cam", json={"sentences": ["a cat"]})
            assert patched.status_code == 200  # changing its sentences keeps its limits
            assert (await service.retention.apply()).events == 10
            stored = set(event_ids(service.store))
            assert not stored & set(cam_old) and set(other_old) <= stored

            assert (await client.delete("/api/streams/cam")).status_code == 204
            service.store.db.execute("UPDATE events SET wall = ? WHERE stream = 'cam'", (five_days_ago,))  # all old now
            assert await service.retention.apply() == Removed()
            assert {"cam", "yard"} <= {row[0] for row in service.store.db.execute("SELECT stream FROM events")}

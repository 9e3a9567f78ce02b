"""Live sources and the multi-stream pipeline against real peers: a GStreamer RTSP server process, ffmpeg
pushing RTSP, an HTTP server serving files and HLS, `cliplive watch` as a process. No mocks.

Every test is bounded by an asyncio timeout (or a subprocess timeout), so a regression fails instead of
hanging; servers are killed on the way out.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import http.server
import json
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from conftest import ffmpeg
from peers import RtspServer, free_port, require_rtsp_server
from cliplive.stream.engine import Queries
from cliplive.stream.events import HighlightEvent, StatusEvent, load_schema
from cliplive.stream.live import AVSource, SourceEnded, SourceOptions, Timeline, source_kind
from cliplive.stream.pipeline import Pipeline
from cliplive.stream.segmenter import SegmenterConfig
from cliplive.stream.source import Frame

# Relative to the stream's own statistics, so random tiny-CLIP similarities open and close segments.
SENSITIVE = SegmenterConfig(prior_weight=1.0, open_threshold=0.5, close_threshold=0.0, min_length=0.5, merge_gap=0.25, min_score=0.0)


# --- peers -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rtsp_ready():
    require_rtsp_server()


class HttpServer:
    """A folder over HTTP on loopback, in a thread."""

    def __init__(self, folder: Path):
        handler = functools.partial(_QuietHandler, directory=str(folder))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/{name}"

    def __enter__(self) -> HttpServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


class Recorded:
    """A source that remembers what it handed out (times, wall clocks, shapes), for the pipeline tests."""

    def __init__(self, source: AVSource):
        self.source = source
        self.frames: list[tuple[float, float, tuple]] = []

    async def recv(self) -> Frame:
        frame = await self.source.recv()
        self.frames.append((frame.t, frame.wall, frame.image.shape))
        return frame

    def __getattr__(self, name):
        return getattr(self.source, name)


async def until(predicate, what: str, timeout: float, step: float = 0.05) -> None:
    """Poll the loop (never block it) until predicate() holds."""
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(step)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout} s waiting for {what}") from None


async def all_frames(source: AVSource, pause: float = 0.0, timeout: float = 20) -> list[Frame]:
    """Every frame a source gives until it ends (a consumer taking `pause` s per frame)."""
    frames = []
    async with asyncio.timeout(timeout):
        with pytest.raises(SourceEnded):
            while True:
                frames.append(await source.recv())
                if pause:
                    await asyncio.sleep(pause)
    return frames


def states(events) -> list[str]:
    return [e.state for e in events if isinstance(e, StatusEvent)]


def increasing(values) -> bool:
    return all(b > a for a, b in zip(values, values[1:]))


# --- media -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def camera(media) -> Path:
    """40 s, 25 fps, 320x240 H.264 mp4 (keyframe every second): the test pattern for 2 s, then a navy
    screen for 2 s, over and over, so a query made from a pattern frame opens and closes segments."""
    path = media / "camera.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=320x240:rate=25", "-f", "lavfi", "-i", "color=c=navy:size=320x240:rate=25",
           "-filter_complex", "[0][1]overlay=enable='gte(mod(t,4),2)'", "-t", "40", "-c:v", "libx264", "-preset", "ultrafast",
           "-g", "25", "-pix_fmt", "yuv420p", str(path))
    return path


@pytest.fixture(scope="module")
def pattern_frame(media) -> Path:
    path = media / "pattern.png"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=320x240:rate=1", "-frames:v", "1", str(path))
    return path


@pytest.fixture(scope="module")
def short_clip(media) -> Path:
    """3 s, 25 fps, 320x240 H.264 mp4."""
    return _test_pattern(media / "short.mp4", seconds=3)


@pytest.fixture(scope="module")
def queries(tiny_clip, pattern_frame) -> Queries:
    return Queries.build(tiny_clip, images=[str(pattern_frame)])


# --- RTSP pull ---------------------------------------------------------------------------------------


async def test_rtsp_frames_with_increasing_times_and_status(rtsp_ready, camera):
    events = []
    async with asyncio.timeout(30):
        with RtspServer(camera) as server:
            source = AVSource(server.url(), "cam", SourceOptions(fps=2, short_side=64), on_status=events.append)
            try:
                frames = [await source.recv() for _ in range(6)]
            finally:
                source.stop()
    times = [f.t for f in frames]
    assert increasing(times) and times[-1] - times[0] >= 2.0, times
    assert increasing([f.wall for f in frames[1:]])
    assert all(f.image.shape == (64, 85, 3) and f.image.dtype == np.uint8 for f in frames)
    assert states(events)[:2] == ["connecting", "live"] and states(events)[-1] == "ended"
    assert source.metrics.decoded > source.metrics.sampled >= 6


async def test_rtsp_server_killed_and_restarted(rtsp_ready, camera, tiny_clip, queries):
    """The camera dies mid-stream and comes back on the same port: the outage is reported, the stream
    reconnects, frames and highlights continue, stream time keeps increasing, nothing blocks."""
    events: list = []
    options = SourceOptions(fps=4, stall_timeout=2.0, open_timeout=3.0, backoff_initial=0.3, backoff_max=2.0)
    server = RtspServer(camera)
    ticks = []  # the event loop must stay responsive throughout
    ticker = asyncio.get_running_loop().create_task(_tick(ticks))
    try:
        async with asyncio.timeout(45):
            server.start()
            pipeline = Pipeline(tiny_clip, events.append, segmenter=SENSITIVE)
            source = Recorded(AVSource(server.url(), "cam", pipeline.source_options(options)))
            runner = pipeline.add("cam", source, queries)
            await until(lambda: runner.scored >= 16 and _highlights(events), "highlights before the outage", 20)
            server.kill()
            killed_at, before = time.time(), len(events)
            await until(lambda: {"stalled", "reconnecting"} & set(states(events[before:])), "the outage reported", 8)
            await asyncio.sleep(1.0)  # down for a while: reconnect attempts fail (connection refused)
            server.start()
            await until(lambda: "live" in states(events[before:]), "live again", 15)

            def after_outage() -> list:  # frames of the new connection: none can be decoded while it is down
                return [f for f in source.frames if f[1] > killed_at + 0.9]

            def highlights_after() -> bool:
                first = after_outage()[0][0]
                return any(max(e.start, e.end or 0.0, e.best_frame_ts) > first for e in _highlights(events[before:]))

            await until(lambda: len(after_outage()) >= 12 and highlights_after(), "frames and highlights after the reconnect", 15)
            await pipeline.stop()
    finally:
        ticker.cancel()
        server.kill()
    times = [t for t, _, _ in source.frames]
    assert increasing(times), times
    # Across the reconnect, stream time moves on by about the wall-clock time the camera was away.
    resumed = source.frames.index(after_outage()[0])
    gap_t = times[resumed] - times[resumed - 1]
    gap_wall = source.frames[resumed][1] - source.frames[resumed - 1][1]
    assert gap_wall > 1.0 and abs(gap_t - gap_wall) < 0.5, (gap_t, gap_wall)
    seq = states(events)
    assert seq[:2] == ["connecting", "live"] and seq[-1] == "ended" and seq.count("live") >= 2, seq
    assert source.metrics.reconnects >= 1
    assert max(np.diff(ticks)) < 0.5  # the loop never blocked
    # Every segment that opened was closed by the end.
    opened = {e.id for e in _highlights(events) if e.type == "new"}
    assert opened and opened == {e.id for e in _highlights(events) if e.type == "end"}


async def test_rtsp_silent_camera_is_noticed_by_the_watchdog(rtsp_ready, camera):
    """A frozen server keeps the TCP connection open and sends nothing (the case PyAV's timeouts have
    missed): the watchdog reports `stalled`, reconnects until the server answers again, and goes on."""
    events: list = []
    options = SourceOptions(fps=2, short_side=64, stall_timeout=1.0, open_timeout=1.5, backoff_initial=0.2, backoff_max=1.0)
    async with asyncio.timeout(30):
        with RtspServer(camera) as server:
            source = Recorded(AVSource(server.url(), "cam", options, on_status=events.append))
            try:
                for _ in range(3):
                    await source.recv()
                server.signal(signal.SIGSTOP)
                frozen_at = time.monotonic()
                receiving = asyncio.get_running_loop().create_task(source.recv())
                await until(lambda: "stalled" in states(events), "stalled", 6)
                assert time.monotonic() - frozen_at < 3.0
                await asyncio.sleep(1.0)
                server.signal(signal.SIGCONT)
                await receiving
                for _ in range(3):
                    await source.recv()
            finally:
                source.stop()
    seq = states(events)
    assert seq.index("stalled") < seq.index("reconnecting") and seq.count("live") >= 2, seq
    assert increasing([t for t, _, _ in source.frames])


# --- RTSP push (listen) ------------------------------------------------------------------------------


async def test_rtsp_push_to_listening_cliplive(rtsp_ready, short_clip):
    """ffmpeg pushes (as an encoder would) to cliplive listening; after the pusher leaves, cliplive listens
    again and takes the next push, its stream time still increasing."""
    port = free_port()
    url = f"rtsp://127.0.0.1:{port}/live"
    events: list = []
    options = SourceOptions(fps=2, short_side=64, open_timeout=2.0, stall_timeout=2.0, backoff_initial=0.1, backoff_max=0.5)
    source = Recorded(AVSource(f"rtsp-listen://127.0.0.1:{port}/live", "push", options, on_status=events.append))
    pushers: list[subprocess.Popen] = []
    try:
        async with asyncio.timeout(40):
            for round_ in range(2):
                receiving = asyncio.get_running_loop().create_task(source.recv())
                await _push(pushers, short_clip, url)
                frame = await receiving
                for _ in range(3):
                    await source.recv()
                await until(lambda: pushers[-1].poll() is not None, "the pusher to finish", 10)
                assert pushers[-1].returncode == 0
    finally:
        source.stop()
        for p in pushers:
            if p.poll() is None:
                p.kill()
    assert frame.image.shape == (64, 85, 3)
    assert increasing([t for t, _, _ in source.frames]) and len(source.frames) >= 8
    assert states(events).count("live") == 2


async def _push(pushers: list, video: Path, url: str) -> None:
    """Start ffmpeg pushing (-re: 3 s); the listener may not be bound yet, so retry a refused push."""
    for _ in range(40):
        proc = subprocess.Popen(["ffmpeg", "-v", "quiet", "-re", "-i", str(video), "-c", "copy", "-f", "rtsp", url])
        pushers.append(proc)
        for _ in range(20):
            await asyncio.sleep(0.05)
            if proc.poll() is not None:
                break
        if proc.poll() is None or proc.returncode == 0:  # pushing (a refused push exits at once)
            return
        await asyncio.sleep(0.2)
    raise AssertionError("ffmpeg could not push to the listening source")


# --- HTTP files and HLS ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["file", "hls"])
async def test_http_file_and_hls_playlist(short_clip, tmp_path, kind):
    folder = tmp_path / "www"
    folder.mkdir()
    shutil.copy(short_clip, folder / "clip.mp4")
    name = "clip.mp4"
    if kind == "hls":
        ffmpeg("-i", str(short_clip), "-c", "copy", "-f", "hls", "-hls_time", "1", "-hls_playlist_type", "vod",
               str(folder / "clip.m3u8"))
        name = "clip.m3u8"
    events: list = []
    with HttpServer(folder) as server:
        assert source_kind(server.url(name)) == ("hls" if kind == "hls" else "http")
        source = AVSource(server.url(name), "web", SourceOptions(fps=2, short_side=64), on_status=events.append)
        frames = await all_frames(source, pause=0.05)  # a consumer slower than the decoder: files wait for it
    times = [f.t for f in frames]
    assert times == pytest.approx([0.5 * i for i in range(6)], abs=0.05), times  # every sampled frame, on media time
    assert source.metrics.dropped == 0
    seq = states(events)
    assert seq[0] == "connecting" and "live" in seq and seq[-1] == "ended" and "reconnecting" not in seq, seq
    assert "error" not in [e for e in events if isinstance(e, StatusEvent)][-1].detail


# --- timestamps --------------------------------------------------------------------------------------


def test_timeline_follows_pts_of_files():
    line = Timeline(live=False)
    assert [line.map(p, 100.0) for p in (5.0, 5.04, 5.08, 9.08)] == pytest.approx([0.0, 0.04, 0.08, 4.08])


def test_timeline_live_pts_jump_forward_backwards_missing_and_reconnect():
    line = Timeline(live=True)
    wall, pts, out = 1000.0, 50.0, []

    def step(p, dt=0.04):
        nonlocal wall
        wall += dt
        out.append(line.map(p, wall))

    for i in range(25):
        step(pts + 0.04 * i)
    assert out[-1] == pytest.approx(0.96)
    step(pts + 3600)  # an encoder restart jumps an hour ahead
    step(pts + 3600.04)
    step(95443.7)  # just below the 33-bit wrap at 90 kHz ...
    step(0.0)  # ... and wrapped round to 0
    step(0.04)
    step(None)  # missing pts
    step(None, dt=0.5)
    step(0.12)
    line.reset()  # a new connection: its pts mean nothing next to the last one's
    step(7.0, dt=2.5)  # reconnected after 2.5 s away
    step(7.04)
    assert increasing(out), out
    gaps = np.diff(out)
    walls = [0.04] * 33 + [0.5, 0.04, 2.5, 0.04]
    assert gaps == pytest.approx(walls[-len(gaps):], abs=1e-6)


def test_timeline_live_follows_pts_jitter():
    """Live pts slightly out of step with arrival (network jitter) are kept, not replaced by wall time."""
    line = Timeline(live=True)
    arrivals = [0.0, 0.1, 0.1, 0.25, 0.3, 0.3, 0.5]
    out = [line.map(0.08 * i, 50.0 + a) for i, a in enumerate(arrivals)]
    assert out == pytest.approx([0.08 * i for i in range(len(arrivals))])


# --- decoding only what sampling needs ----------------------------------------------------------------


async def test_keyframes_only_while_they_are_frequent_enough(media):
    """At 1 fps with a keyframe every second, only keyframes are decoded; when keyframes become sparser
    (3 s apart) decoding goes back to every frame, and the sampled frames are the same throughout."""
    parts = []
    for i, gop in enumerate((25, 75)):
        part = media / f"gop{i}.ts"
        ffmpeg("-f", "lavfi", "-i", "testsrc=size=160x120:rate=25", "-t", "6", "-c:v", "libx264", "-preset", "ultrafast",
               "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0", "-pix_fmt", "yuv420p",
               "-output_ts_offset", str(6 * i), "-f", "mpegts", str(part))
        parts.append(part)
    video = media / "gop-change.ts"
    video.write_bytes(b"".join(p.read_bytes() for p in parts))

    async def sample(**options) -> tuple[list[float], AVSource]:
        source = AVSource(str(video), "gop", SourceOptions(fps=1, short_side=None, **options))
        return [f.t for f in await all_frames(source)], source

    times, source = await sample()
    everything, full = await sample(skip_nonkey=False, skip_nonref=False)
    assert full.metrics.decoded == full.metrics.received == 300
    # Keyframes only in the first half; everything in the second, replayed from its first keyframe
    # once the next one is overdue (nothing lost).
    assert source.metrics.decoded == 6 + 150, source.metrics.decoded
    assert source.metrics.received == 300
    assert len(times) == len(everything) == 12 and increasing(times), (times, everything)
    assert times == pytest.approx(everything, abs=0.2)


# --- resolution change -------------------------------------------------------------------------------


async def test_resolution_change_mid_stream(media, tiny_clip, queries):
    """One MPEG-TS: 2 s of 320x240, then 2 s of 256x144 (new SPS mid-stream)."""
    parts = []
    for i, size in enumerate(("320x240", "256x144")):
        part = media / f"res{i}.ts"
        ffmpeg("-f", "lavfi", "-i", f"testsrc=size={size}:rate=25", "-t", "2", "-c:v", "libx264", "-preset", "ultrafast",
               "-g", "25", "-pix_fmt", "yuv420p", "-output_ts_offset", str(2 * i), "-f", "mpegts", str(part))
        parts.append(part)
    video = media / "res-change.ts"
    video.write_bytes(b"".join(p.read_bytes() for p in parts))

    frames = await all_frames(AVSource(str(video), "res", SourceOptions(fps=4, short_side=None)))
    assert {f.image.shape for f in frames} == {(240, 320, 3), (144, 256, 3)}
    assert increasing([f.t for f in frames])

    # Through the pipeline (frames scaled for the encoder, batched, scored): both sizes come through.
    events: list = []
    pipeline = Pipeline(tiny_clip, events.append)
    recorded = Recorded(AVSource(str(video), "res", pipeline.source_options(SourceOptions(fps=4))))
    runner = pipeline.add("res", recorded, queries)
    async with asyncio.timeout(30):
        await pipeline.wait()
        await pipeline.stop()
    assert {shape for _, _, shape in recorded.frames} == {(64, 85, 3), (64, 114, 3)}
    assert runner.scored == len(recorded.frames) and states(events)[-1] == "ended"


# --- overload ----------------------------------------------------------------------------------------


class SlowEncoder:
    """The tiny encoder made slow (each batch sleeps): far fewer frames per second than the streams send."""

    def __init__(self, encoder, seconds: float):
        self.encoder, self.seconds = encoder, seconds
        self.largest_batch = 0

    def encode_frames(self, frames):
        self.largest_batch = max(self.largest_batch, len(frames))
        time.sleep(self.seconds)
        return self.encoder.encode_frames(frames)

    def __getattr__(self, name):
        return getattr(self.encoder, name)


async def test_overload_keeps_memory_bounded_and_reports_drops(media, tiny_clip, queries):
    video = media / "overload.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=320x240:rate=25", "-t", "20", "-c:v", "libx264", "-preset", "ultrafast",
           "-g", "25", "-pix_fmt", "yuv420p", str(video))
    streams = 6
    slow = SlowEncoder(tiny_clip, 0.25)
    events: list = []
    gc.collect()
    # Frames other tests' objects still hold (FastAPI caches keep earlier apps, and so their services, alive).
    before = sum(type(o) is Frame for o in gc.get_objects())
    pipeline = Pipeline(slow, events.append, max_batch=2)
    for i in range(streams):
        pipeline.add(f"s{i}", str(video), queries, SourceOptions(fps=10, realtime=True))
    peak_frames = peak_pending = 0
    async with asyncio.timeout(30):
        for _ in range(8):
            await asyncio.sleep(0.5)
            alive = sum(type(o) is Frame for o in gc.get_objects()) - before
            peak_frames = max(peak_frames, alive)
            pending = pipeline.encoder.queued
            peak_pending = max(peak_pending, pending)
        metrics = pipeline.snapshot()
        await pipeline.stop()
    # At most one frame waiting per stream in its source, one per stream queued for or inside the encoder.
    assert peak_pending <= streams and slow.largest_batch <= 2
    assert peak_frames <= 2 * streams, (peak_frames, before)
    dropped = [s.dropped for s in metrics.streams]
    assert all(d > 0 for d in dropped), metrics
    # What the encoder could not take shows as a lower effective sampling rate, not as growing latency.
    for s in metrics.streams:
        assert s.sampled_fps > 5 and s.scored < 8 * 10 / 2
        assert s.latency_p99_s is not None and s.latency_p99_s < 4 * 0.25 * streams / 2 + 1.0
    assert states(events).count("ended") == streams


# --- cliplive watch ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pattern_video(media) -> Path:
    """20 s of the test pattern: every frame matches the pattern query, so a segment stays open."""
    return _test_pattern(media / "pattern.mp4", seconds=20)


async def _watch_until_open_then_signal(args: list[str], sig: int) -> tuple[int, list[dict], str]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "cliplive.server.cli", "watch", *args,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    lines: list[dict] = []
    try:
        async with asyncio.timeout(60):
            while not any(e.get("kind") == "highlight" and e["type"] == "new" for e in lines):
                line = await proc.stdout.readline()
                assert line, "watch ended before a highlight opened: " + (await proc.stderr.read()).decode()
                lines.append(json.loads(line))
            await asyncio.sleep(0.3)
            proc.send_signal(sig)
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    lines += [json.loads(line) for line in out.decode().splitlines()]
    return proc.returncode, lines, err.decode()


async def test_watch_prints_schema_valid_events_and_closes_segments_on_sigint_and_sigterm(pattern_video, pattern_frame, tiny_clip_config):
    args = [str(pattern_video), "--realtime", "--encoder", "clip", "--model", tiny_clip_config, "--pretrained", "random",
            "--image", str(pattern_frame), "--fps", "4", "--metrics", "0.5"]
    validator = jsonschema.Draft202012Validator(load_schema())
    results = await asyncio.gather(*(_watch_until_open_then_signal(args, sig) for sig in (signal.SIGINT, signal.SIGTERM)))
    for returncode, lines, err in results:
        assert returncode == 0, err
        assert "Traceback" not in err
        for event in lines:
            validator.validate(event)
        kinds = {e["kind"] for e in lines}
        assert kinds == {"status", "highlight", "metrics"}, kinds
        status = [e["state"] for e in lines if e["kind"] == "status"]
        assert status[:2] == ["connecting", "live"] and status[-1] == "ended", status
        highlights = [e for e in lines if e["kind"] == "highlight"]
        opened = {e["id"] for e in highlights if e["type"] == "new"}
        ended = [e for e in highlights if e["type"] == "end"]
        assert opened and {e["id"] for e in ended} == opened
        assert all(e["end"] > e["start"] for e in ended)
        assert lines[-1]["kind"] == "metrics"  # the final snapshot, after the end events


def test_watch_bad_source_is_one_line_and_exit_2():
    procs = [subprocess.Popen([sys.executable, "-m", "cliplive.server.cli", "watch", bad, "-s", "a dog"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for bad in ("ftp://x", "/no/such/video.mp4")]
    for proc, pattern in zip(procs, ("unsupported source 'ftp://x'", "no such file")):
        try:
            out, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
        assert proc.returncode == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("cliplive: error: ") and "Traceback" not in err, err
        assert pattern in lines[0] and out == ""


def test_watch_stdout_is_json_lines_through_jq_with_named_streams(short_clip, pattern_frame, tiny_clip_config, tmp_path):
    """`cliplive watch FILE FILE --name ... | jq -c .`: every stdout line is one JSON object, all printed alike
    (compact, metrics included), and the streams carry the names given, in order."""
    if not shutil.which("jq"):
        pytest.skip("jq is missing: .ci/setup --test installs Debian's jq")
    raw = tmp_path / "raw.jsonl"
    watch = [sys.executable, "-m", "cliplive.server.cli", "watch", str(short_clip), str(short_clip), "--name", "front",
             "--name", "back.door", "--encoder", "clip", "--model", tiny_clip_config, "--pretrained", "random",
             "--image", str(pattern_frame), "--fps", "4", "--metrics", "0.2"]
    command = " ".join(shlex.quote(a) for a in watch) + f" | tee {shlex.quote(str(raw))} | jq -c ."
    result = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    lines = raw.read_text().splitlines()
    assert lines and len(result.stdout.splitlines()) == len(lines)
    events = [json.loads(line) for line in lines]
    for line, event in zip(lines, events):  # one style: compact, UTF-8 as is
        assert line == json.dumps(event, separators=(",", ":"), ensure_ascii=False)
    assert {e["kind"] for e in events} >= {"status", "metrics"}
    assert {e["stream"] for e in events if "stream" in e} == {"front", "back.door"}
    mismatch = subprocess.run([*watch[:6], "--name", "front"], capture_output=True, text=True, timeout=60)
    assert mismatch.returncode == 2 and mismatch.stdout == ""
    assert mismatch.stderr.strip().splitlines() == [
        "cliplive: error: --name given 1 time for 2 sources: give one per source, in order, or none"]


# --- helpers -----------------------------------------------------------------------------------------


def _test_pattern(path: Path, seconds: float) -> Path:
    """FFmpeg's test pattern, 320x240 25 fps H.264 with a keyframe every second."""
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=320x240:rate=25", "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast",
           "-g", "25", "-pix_fmt", "yuv420p", str(path))
    return path


def _highlights(events) -> list[HighlightEvent]:
    return [e for e in events if isinstance(e, HighlightEvent)]


async def _tick(ticks: list[float]) -> None:
    while True:
        ticks.append(time.monotonic())
        await asyncio.sleep(0.05)

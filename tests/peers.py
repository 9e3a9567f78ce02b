"""Real peers on loopback shared by the tests and benchmarks: free ports and GStreamer's RTSP server as a process."""

from __future__ import annotations

import select
import shutil
import signal
import socket
import subprocess
from pathlib import Path

RTSP_SERVER = Path(__file__).parent / "tools" / "rtsp_server.py"
SYSTEM_PYTHON = "/usr/bin/python3"  # PyGObject belongs to Debian's Python, not the venv


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_rtsp_server() -> None:
    """Fail the test with what to do when the GStreamer RTSP server or ffmpeg is missing (.ci/setup --test installs them)."""
    import pytest  # (benchmarks use this module without pytest)

    check = "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer"
    if not Path(SYSTEM_PYTHON).exists() or subprocess.run([SYSTEM_PYTHON, "-c", check], capture_output=True).returncode:
        pytest.fail("GStreamer's RTSP server (python3-gi, gir1.2-gst-rtsp-server-1.0) is missing: run .ci/setup --test")
    if not shutil.which("ffmpeg"):
        pytest.fail("ffmpeg is missing: run .ci/setup --test")


class RtspServer:
    """tests/tools/rtsp_server.py under the system Python: GStreamer's RTSP server on loopback."""

    def __init__(self, video: Path, port: int | None = None, mounts: tuple[str, ...] = ("/cam",)):
        self.video, self.port, self.mounts = video, port or free_port(), mounts
        self.proc: subprocess.Popen | None = None

    def url(self, mount: str = "/cam") -> str:
        return f"rtsp://127.0.0.1:{self.port}{mount}"

    def start(self) -> RtspServer:
        # setpriv sets PR_SET_PDEATHSIG (the kernel kills the server if the test process dies without cleaning
        # up) and execs it: no Python runs in the forked child, where a garbage collection freeing PyAV's
        # threaded contexts would hang forever.
        self.proc = subprocess.Popen(["setpriv", "--pdeathsig", "KILL", SYSTEM_PYTHON, str(RTSP_SERVER), str(self.port),
                                      str(self.video), *self.mounts], stdout=subprocess.PIPE, text=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], 20)
        line = self.proc.stdout.readline() if ready else ""
        if line.strip() != "ready":
            self.kill()
            raise RuntimeError(f"the GStreamer RTSP server did not start (printed {line!r}): run .ci/setup --test")
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def __enter__(self) -> RtspServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a test may have paused it
        self.kill()

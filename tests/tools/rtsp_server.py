"""A real RTSP server for tests and benchmarks: GStreamer's rtsp-server on loopback.

Runs under Debian's system Python (PyGObject lives there): /usr/bin/python3 rtsp_server.py PORT FILE.mp4 [MOUNT...]
Each mount serves the H.264 video of FILE (an mp4) paced in real time, as a camera would (shared by
its clients; it ends with the file, so make the file as long as the test). Prints "ready" once listening.
"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


class FileFactory(GstRtspServer.RTSPMediaFactory):
    def __init__(self, path: str):
        super().__init__()
        self.path = path
        self.set_shared(False)  # one pipeline per client: shared media hits a GStreamer assertion (gst_rtsp_media_get_rates) when a second client joins

    def do_create_element(self, url):
        return Gst.parse_launch(
            f'filesrc location="{self.path}" ! qtdemux ! h264parse config-interval=-1 ! rtph264pay name=pay0 pt=96'
        )


def main() -> None:
    port, path, *mounts = sys.argv[1:]
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    for mount in mounts or ["/stream"]:
        server.get_mount_points().add_factory(mount, FileFactory(path))
    server.attach(None)
    print("ready", flush=True)
    GLib.MainLoop().run()


main()

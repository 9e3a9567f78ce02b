"""What API clients may make the server reach (issue 11, findings 5 and 6): refused hosts are refused before
any connection, private ranges stay reachable, remote servers cannot pick FFmpeg's demuxer or protocol (an SDP
served over http), http sources do not follow redirects, and API streams' errors are no port scanner.

NETWORK RULE: traffic goes to loopback only; av.open is replaced wherever a test names another address.
"""

from __future__ import annotations

import asyncio
import http.server
import socket
import threading

import av
import pytest

from cliplive.models.errors import InputError
from cliplive.server.config import check_source
from cliplive.stream.hosts import HostRefused, check_host, refused_reason
from cliplive.stream.live import AVSource, SourceOptions, av_options
from test_service import asgi_client, make_app, stream_spec  # noqa: F401 (fixtures)

SDP_PORT = 18093
SDP = (b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       b"m=video %d RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n" % SDP_PORT)

REFUSED = ["rtsp://127.0.0.1/cam", "http://localhost/x.mp4", "rtsp://[::1]/cam", "rtsp://0.0.0.0/cam",
           "http://2130706433/x.mp4", "rtsp://127.1/cam", "http://[::ffff:127.0.0.1]/x.mp4",
           "http://169.254.169.254/latest/meta-data/", "http://[fe80::1]/x", "HTTP://127.0.0.1:8080/x.mp4",
           "rtsp://224.0.0.1/cam", "http://[fd00:ec2::254]/x", "http://100.100.100.200/x", "rtsp://user:pw@127.0.0.1/cam"]
PRIVATE = ["rtsp://10.1.2.3/cam", "rtsp://192.168.1.20/cam"]


@pytest.fixture
def no_connections(monkeypatch):
    """av.open and socket connections are recorded and fail: nothing leaves this process."""
    calls = []

    def fake_open(url, *args, **kwargs):
        calls.append(("av.open", url))
        raise OSError(111, "Connection refused")

    def fake_connect(sock, address):
        calls.append(("connect", address))
        raise OSError(111, "Connection refused")

    monkeypatch.setattr(av, "open", fake_open)
    monkeypatch.setattr(socket.socket, "connect", fake_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", fake_connect)
    return calls


def fake_resolver(*addresses: str):
    def resolve(host, port, *args):
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in addresses]
    return resolve


# --- the check itself ----------------------------------------------------------------------------------


@pytest.mark.parametrize("source", REFUSED)
def test_refused_hosts(source):
    with pytest.raises(InputError, match="does not allow local sources"):
        check_source(source, allow_local=False)  # numeric forms resolve without DNS; localhost from /etc/hosts


@pytest.mark.parametrize("source", REFUSED)
def test_local_hosts_allowed_by_config(source):
    assert check_source(source, allow_local=True).startswith(("rtsp://", "http://"))


@pytest.mark.parametrize("address", ["10.1.2.3", "172.16.0.9", "192.168.1.20", "fc00::1", "fd12:3456::1", "8.8.8.8", "2001:db8::1"])
def test_private_and_public_addresses_pass(address):
    assert refused_reason(address) is None


@pytest.mark.parametrize("address", ["::ffff:169.254.169.254", "64:ff9b::7f00:1", "2002:7f00:1::", "0.1.2.3", "255.255.255.255", "ff02::1"])
def test_embedded_and_odd_addresses_refused(address):
    assert refused_reason(address) is not None


def test_any_resolved_address_counts():
    """A name that resolves to a camera and to loopback is refused (FFmpeg may try either)."""
    with pytest.raises(HostRefused, match="loopback"):
        check_host("rtsp://cam.example/x", fake_resolver("10.0.0.5", "127.0.0.1"))
    check_host("rtsp://cam.example/x", fake_resolver("10.0.0.5", "192.168.0.7"))


def test_unresolvable_host_refused():
    def fail(*args):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    with pytest.raises(HostRefused, match="does not resolve"):
        check_source("rtsp://nowhere.invalid/cam", False, fail)


def test_scheme_is_stored_lower_case():
    assert check_source("HTTP://10.0.0.1:8080/x.mp4", False, fake_resolver("10.0.0.1")) == "http://10.0.0.1:8080/x.mp4"
    assert check_source("RtSp://cam.example/Stream", False, fake_resolver("10.0.0.1")) == "rtsp://cam.example/Stream"


def test_ffmpeg_options_of_network_kinds():
    options = SourceOptions()
    for kind in ("rtsp", "rtsp-listen", "http", "hls"):
        opts = av_options(kind, options, 10)
        assert "file" not in opts["protocol_whitelist"].split(",")
        assert not {"sdp", "rtp", "concat"} & set(opts["format_whitelist"].split(","))
    assert "hls" not in av_options("http", options, 10)["format_whitelist"].split(",")
    assert av_options("http", options, 10)["max_redirects"] == "0"
    assert av_options("hls", options, 10)["max_redirects"] == "0"


# --- through the API -----------------------------------------------------------------------------------


@pytest.mark.parametrize("source", REFUSED + ["http://[::1]:1/x.mp4"])
async def test_api_refuses_local_hosts_without_connecting(make_app, no_connections, source):
    service, app = make_app(allow_local=False)
    async with asgi_client(app) as client:
        r = await client.post("/api/streams", json=stream_spec("cam", source))
        assert r.status_code == 400, r.text
        assert "does not allow local sources" in r.json()["detail"]
        assert "pw" not in r.text
        assert (await client.get("/api/streams")).json() == []
    assert no_connections == []


@pytest.mark.parametrize("source", PRIVATE)
async def test_api_accepts_private_ranges_and_hides_reasons(make_app, no_connections, source):
    """Cameras on private networks are accepted; why a connection failed stays in the log (no port scanner)."""
    service, app = make_app(allow_local=False)
    async with asgi_client(app) as client:
        r = await client.post("/api/streams", json=stream_spec("cam", source))
        assert r.status_code == 201, r.text
        for _ in range(100):
            status = (await client.get("/api/streams/cam")).json()["last_status"]
            if status and status["state"] in ("reconnecting", "ended"):
                break
            await asyncio.sleep(0.05)
        assert (await client.delete("/api/streams/cam")).status_code == 204
    assert status["state"] in ("reconnecting", "ended"), status
    assert "refused" not in str(status).lower() and "cannot connect" in str(status), status
    assert all(kind == "av.open" for kind, _ in no_connections)  # the stub: nothing reached 10/8 or 192.168/16


async def test_api_allows_loopback_when_config_allows_local(make_app, no_connections):
    service, app = make_app(allow_local=True)
    async with asgi_client(app) as client:
        r = await client.post("/api/streams", json=stream_spec("cam", "HTTP://127.0.0.1:9/x.mp4"))
        assert r.status_code == 201, r.text
        assert r.json()["source"] == "http://127.0.0.1:9/x.mp4"
        assert service.store.active_streams()[0][0]["source"] == "http://127.0.0.1:9/x.mp4"
        assert (await client.delete("/api/streams/cam")).status_code == 204


async def test_reconnects_check_the_host_again(monkeypatch, no_connections):
    """An API stream whose name resolves to loopback at a later connection is refused before FFmpeg runs."""
    monkeypatch.setattr(socket, "getaddrinfo", fake_resolver("127.0.0.1"))
    states = []
    source = AVSource("rtsp://cam.example/x", "cam", SourceOptions(allow_local=False, backoff_initial=0.01), states.append)
    try:
        with pytest.raises(Exception):
            await asyncio.wait_for(source.recv(), 0.5)
    finally:
        source.stop()
    assert no_connections == []
    assert [s.detail.get("reason") for s in states if s.state == "reconnecting"][:1] == ["cannot connect"]


# --- what remote servers may not choose (loopback servers; trusted sources) ------------------------------


class _Server(http.server.BaseHTTPRequestHandler):
    requests: list = []
    redirect_to = ""

    def do_GET(self):
        self.requests.append((self.server.server_port, self.path))
        if self.path.startswith("/redirect"):
            self.send_response(302)
            self.send_header("Location", self.redirect_to)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/sdp")
        self.send_header("Content-Length", str(len(SDP)))
        self.end_headers()
        self.wfile.write(SDP)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_servers():
    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Server) for _ in range(2)]
    _Server.requests = []
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield [f"http://127.0.0.1:{s.server_port}" for s in servers]
    for server in servers:
        server.shutdown()
        server.server_close()


def udp_bound(port: int) -> bool:
    suffix = ":%04X" % port
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        if any(line.split()[1].endswith(suffix) for line in lines):
            return True
    return False


def test_sdp_over_http_is_refused_and_binds_nothing(http_servers):
    assert not udp_bound(SDP_PORT)
    with pytest.raises(av.error.FFmpegError):
        av.open(http_servers[0] + "/x.mp4", options=av_options("http", SourceOptions(), 3), timeout=(3, 3))
    assert not udp_bound(SDP_PORT)
    assert _Server.requests  # it was fetched: the whitelist refused what came back


async def test_sdp_over_http_source_says_why(http_servers):
    states = []
    source = AVSource(http_servers[0] + "/x.mp4", "cam", SourceOptions(open_timeout=3, backoff_initial=5), states.append)
    try:
        with pytest.raises(Exception):
            await asyncio.wait_for(source.recv(), 2)
        reasons = [s.detail.get("reason") or s.detail.get("error") for s in states if s.state in ("reconnecting", "ended")]
    finally:
        source.stop()
    assert reasons and "not a video format allowed" in reasons[0], states
    assert not udp_bound(SDP_PORT)


def test_http_redirects_are_not_followed(http_servers):
    first, second = http_servers
    _Server.redirect_to = second + "/x.mp4"
    with pytest.raises(av.error.FFmpegError):
        av.open(first + "/redirect", options=av_options("http", SourceOptions(), 3), timeout=(3, 3))
    assert [path for _, path in _Server.requests] == ["/redirect"]  # the second server was never asked

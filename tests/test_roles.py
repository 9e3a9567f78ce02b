"""Tokens with roles (cliplive.server.tokens): a viewer token reads streams, highlights, metrics and events
(SSE and WebSocket) and is refused, with a 403 JSON, everything that changes something (streams, WebRTC and
WHIP ingest); an admin token may do it all. Tokens are made and revoked with `cliplive token` (a subprocess)
while the server runs, stored hashed in a 0600 file, and the plain `token` file of earlier versions becomes
an admin token at start."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import httpx
import pytest
import websockets

from test_service import asgi_client, make_app, sse_events, stream_spec, uvicorn_server, wait_for  # noqa: F401 (fixture)
from test_startup import cli as cli_probe
from cliplive.server.app import create_app
from cliplive.server.config import ServerSettings
from cliplive.server.serve import prepare_tokens
from cliplive.server.tokens import Credentials, TokenFile

TOKEN_CLI = [sys.executable, "-m", "cliplive.server.cli", "token"]
DEAD_CAMERA = "rtsp://127.0.0.1:1/live"  # nothing listens: the stream keeps reconnecting, and says so in events


@pytest.fixture
def roles(make_app, tmp_path):
    """(service, app, {"admin": headers, "viewer": headers}): the app over a tokens file with one of each."""

    def make(streams: list[dict] = ()):
        service, _ = make_app(list(streams))
        tokens = TokenFile(tmp_path / "data")
        headers = {role: {"Authorization": f"Bearer {tokens.add(role)[1]}"} for role in ("admin", "viewer")}
        return service, create_app(service, Credentials(tokens)), headers

    return make


def forbidden(method: str, path: str) -> dict:
    return {"detail": f"this token's role (viewer) may not {method} {path}: that takes an admin token"}


def token_cli(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([*TOKEN_CLI, *args], capture_output=True, text=True, timeout=60, cwd=cwd)


async def test_a_viewer_reads_and_only_an_admin_changes_streams_or_sends_video(roles):
    service, app, auth = roles()
    viewer, admin = auth["viewer"], auth["admin"]
    async with asyncio.timeout(30), asgi_client(app) as client:
        assert (await client.get("/api/whoami", headers=viewer)).json() == {"name": "viewer", "role": "viewer"}
        assert (await client.get("/api/whoami", headers=admin)).json() == {"name": "admin", "role": "admin"}
        refused = await client.post("/api/streams", json=stream_spec("cam", DEAD_CAMERA), headers=viewer)
        assert (refused.status_code, refused.json()) == (403, forbidden("POST", "/api/streams"))
        assert refused.headers["content-type"] == "application/json" and service.streams == {}
        created = await client.post("/api/streams", json=stream_spec("cam", DEAD_CAMERA), headers=admin)
        assert created.status_code == 201, created.text
        for path in ("/api/streams", "/api/streams/cam", "/api/highlights", "/metrics"):
            assert (await client.get(path, headers=viewer)).status_code == 200, path
            assert (await client.head(path, headers=viewer)).status_code == 200, path
        assert [s["name"] for s in (await client.get("/api/streams", headers=viewer)).json()] == ["cam"]
        assert (await client.get("/api/highlights/1", headers=viewer)).status_code == 404  # read, and nothing there
        for method, path, options in (
                ("PATCH", "/api/streams/cam", {"json": {"sentences": ["a cat"]}}),
                ("DELETE", "/api/streams/cam", {}),
                ("POST", "/api/streams", {"content": b"{not json", "headers": {"Content-Type": "application/json"}}),
                ("POST", "/api/whip", {"content": b"v=0", "headers": {"Content-Type": "application/sdp"}}),
                ("POST", "/api/webrtc/offer", {"json": {"sdp": "v=0", "type": "offer", "sentences": ["a"]}}),
                ("DELETE", "/api/whip/abc", {})):
            headers = {**viewer, **options.pop("headers", {})}
            response = await client.request(method, path, headers=headers, **options)
            assert (response.status_code, response.json()) == (403, forbidden(method, path)), (method, path)
        assert (await client.get("/api/streams/cam", headers=viewer)).json()["sentences"] == ["a dog on a beach", "a red square"]
        # The admin gets past the role check on the same requests (and on to what the handlers say).
        patched = await client.patch("/api/streams/cam", json={"sentences": ["a cat"]}, headers=admin)
        assert patched.status_code == 200 and patched.json()["sentences"] == ["a cat"]
        whip = await client.post("/api/whip?sentence=a", content=b"v=0", headers={**admin, "Content-Type": "text/plain"})
        assert whip.status_code == 415
        assert (await client.delete("/api/whip/abc", headers=admin)).status_code == 404
        assert (await client.delete("/api/streams/cam", headers=admin)).status_code == 204
        # No token, or an unknown one: 401 as before, whatever the method.
        for headers in ({"Authorization": ""}, {"Authorization": "Bearer not-a-known-token-0123456789"}):
            for method in ("GET", "POST"):
                response = await client.request(method, "/api/streams", headers=headers)
                assert (response.status_code, response.json()) == (401, {"detail": "missing or invalid bearer token"})


async def test_a_viewer_reads_events_over_sse_and_websocket(roles):
    service, app, auth = roles([stream_spec("cam", DEAD_CAMERA)])
    secret = auth["viewer"]["Authorization"].split()[1]
    async with asyncio.timeout(30), uvicorn_server(app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            for request in ({"headers": {**auth["viewer"], "Last-Event-ID": "0"}}, {"params": {"after": 0, "access_token": secret}}):
                async with client.stream("GET", "/api/events", **request) as response:
                    assert response.status_code == 200
                    event_id, event = await anext(sse_events(response))
                assert (event_id, event["kind"], event["stream"]) == (1, "status", "cam")
        async with websockets.connect(f"{url.replace('http', 'ws')}/api/events/ws?after=0&access_token={secret}") as ws:
            event = json.loads(await ws.recv())
        assert (event["event_id"], event["stream"]) == (1, "cam")


async def test_an_open_event_stream_ends_when_its_token_is_removed(roles, tmp_path):
    """SSE and WebSocket connections made with a token end within a few seconds of its removal (the WebSocket
    with 1008): a revoked wall screen stops receiving alerts; the other tokens' streams go on."""
    service, app, auth = roles([stream_spec("cam", DEAD_CAMERA)])
    tokens = TokenFile(tmp_path / "data")
    _, secret = tokens.add("viewer", "wall-screen")
    async with asyncio.timeout(30), uvicorn_server(app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=20) as client, \
                client.stream("GET", "/api/events", params={"after": 0, "access_token": secret}) as revoked, \
                client.stream("GET", "/api/events", headers={**auth["viewer"], "Last-Event-ID": "0"}) as kept:
            revoked_events, kept_events = sse_events(revoked), sse_events(kept)
            assert (await anext(revoked_events))[0] == (await anext(kept_events))[0] == 1
            async with websockets.connect(f"{url.replace('http', 'ws')}/api/events/ws?after=0&access_token={secret}") as ws:
                assert json.loads(await ws.recv())["event_id"] == 1
                tokens.remove("wall-screen")
                started = asyncio.get_running_loop().time()
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    while True:
                        await ws.recv()
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "token removed")
            async for _ in revoked_events:  # the SSE response ends too (what was on its way may come first) ...
                pass
            assert asyncio.get_running_loop().time() - started < 10
            assert not kept.is_closed  # ... while the other token's stream stays open
        assert (await httpx.AsyncClient(base_url=url).get("/api/events", params={"access_token": secret})).status_code == 401


async def test_tokens_added_and_removed_with_the_cli_take_effect_without_a_restart(roles, tmp_path):
    service, app, auth = roles()
    (tmp_path / "cliplive.toml").write_text('[server]\ndata_dir = "data"\n')
    config = ["--config", str(tmp_path / "cliplive.toml")]
    async with asyncio.timeout(60), asgi_client(app) as client:
        added = token_cli("add", "--role", "viewer", "--name", "wall-screen", *config, cwd=tmp_path)
        assert added.returncode == 0, added.stderr
        secret = added.stdout.strip()
        assert len(secret) >= 32 and secret not in added.stderr
        assert f"added viewer token 'wall-screen' to {tmp_path / 'data' / 'tokens.json'}" in added.stderr
        headers = {"Authorization": f"Bearer {secret}"}

        async def whoami() -> dict | None:
            response = await client.get("/api/whoami", headers=headers)
            return response.json() if response.status_code == 200 else None

        assert await wait_for(whoami, 5, "the added token to be taken") == {"name": "wall-screen", "role": "viewer"}
        listed = token_cli("list", *config, cwd=tmp_path)
        assert listed.returncode == 0 and [line.split()[:2] for line in listed.stdout.splitlines()] == [
            ["NAME", "ROLE"], ["admin", "admin"], ["viewer", "viewer"], ["wall-screen", "viewer"]]
        assert secret not in listed.stdout + listed.stderr
        removed = token_cli("remove", "wall-screen", *config, cwd=tmp_path)
        assert removed.returncode == 0, removed.stderr

        async def refused() -> bool:
            return (await client.get("/api/whoami", headers=headers)).status_code == 401

        await wait_for(refused, 5, "the removed token to be refused")
        assert (await client.get("/api/whoami", headers=auth["viewer"])).status_code == 200  # the others still work


def test_the_token_cli_refuses_bad_input_in_one_line_and_keeps_no_plain_token(tmp_path):
    added = token_cli("add", "--role", "admin", "--name", "ops", cwd=tmp_path)  # default data dir: ./cliplive-data
    assert added.returncode == 0, added.stderr
    path = tmp_path / "cliplive-data" / "tokens.json"
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    text = path.read_text()
    assert added.stdout.strip() not in text
    assert [(t["name"], t["role"], len(t["sha256"])) for t in json.loads(text)["tokens"]] == [("ops", "admin", 64)]
    for args, message in ((["add", "--role", "root"], "unknown role 'root': viewer or admin"),
                          (["add", "--role", "viewer", "--name", "ops"], "a token named 'ops' exists already (cliplive token list)"),
                          (["add", "--role", "viewer", "--name", "no spaces"], "token name 'no spaces': letters, digits"),
                          (["remove", "nobody"], "no token named 'nobody' (cliplive token list)")):
        result = token_cli(*args, cwd=tmp_path)
        assert result.returncode == 2 and result.stdout == "", (args, result)
        assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith(f"cliplive: error: {message}"), result.stderr
    assert json.loads(path.read_text())["tokens"][0]["name"] == "ops" and len(json.loads(path.read_text())["tokens"]) == 1
    path.write_text("{broken")
    result = token_cli("list", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("cliplive: error: cliplive-data/tokens.json: cannot read the tokens"), result.stderr


def test_the_token_command_imports_no_torch(tmp_path):
    assert cli_probe("token", "--help")[0] == {"status": 0, "heavy": []}
    (tmp_path / "cliplive.toml").write_text(f'[server]\ndata_dir = "{tmp_path / "data"}"\n')
    result, _ = cli_probe("token", "add", "--role", "viewer", "--config", str(tmp_path / "cliplive.toml"))
    assert result["status"] == 0 and "torch" not in result["heavy"]


def test_an_old_plain_token_becomes_the_admin_token_hashed(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    old = "an-old-plain-token-0123456789"
    (data / "token").write_text(old + "\n")
    os.chmod(data / "token", 0o644)
    credentials, save = prepare_tokens(ServerSettings(data_dir=data))
    assert (data / "token").exists() and not (data / "tokens.json").exists()  # nothing changes until the server listens
    save()
    assert not (data / "token").exists() and old not in (data / "tokens.json").read_text()
    assert oct(os.stat(data / "tokens.json").st_mode & 0o777) == "0o600"
    assert credentials.identify(old).role == "admin"
    assert "generated" not in capsys.readouterr().err  # the old token is kept: no new one
    # Interrupted after the new file was written, before the plain one went: the next start only removes it.
    (data / "token").write_text(old)
    TokenFile(data).migrate_legacy()
    assert [t.name for t in TokenFile(data).read()] == ["admin"] and not (data / "token").exists()
    # With an admin token stored, a start writes nothing.
    assert prepare_tokens(ServerSettings(data_dir=data))[1] is None


def test_a_first_start_makes_an_admin_token_and_a_config_token_is_an_admin(tmp_path, capsys):
    credentials, save = prepare_tokens(ServerSettings(data_dir=tmp_path / "fresh"))
    assert not (tmp_path / "fresh").exists()
    save()
    printed = capsys.readouterr().err.splitlines()
    assert printed[0].startswith(f"cliplive: generated an API token, saved in {tmp_path / 'fresh' / 'tokens.json'} as admin")
    assert printed[1] not in (tmp_path / "fresh" / "tokens.json").read_text()
    assert credentials.identify(printed[1]).role == "admin"
    # A config token: an admin named "config"; an old plain file next to it stays unused and untouched.
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "token").write_text("an-old-plain-token-0123456789")
    credentials, save = prepare_tokens(ServerSettings(data_dir=tmp_path / "old", token="config-token-0123456789"))
    assert save is None and (tmp_path / "old" / "token").exists()
    assert credentials.identify("config-token-0123456789").name == "config"
    assert credentials.identify("an-old-plain-token-0123456789") is None


async def test_the_schema_says_where_a_viewer_gets_403_and_without_auth_everyone_is_admin(roles):
    service, app, auth = roles()
    async with asyncio.timeout(30), asgi_client(app) as client:
        schema = (await client.get("/openapi.json")).json()
    async with asyncio.timeout(30), asgi_client(create_app(service, None)) as client:
        assert (await client.get("/api/whoami", headers={"Authorization": ""})).json() == {"name": None, "role": "admin"}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            assert ("403" in operation["responses"]) == (method not in ("get", "head", "options")), (method, path)
    assert schema["paths"]["/api/whoami"]["get"]["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/WhoAmI"}

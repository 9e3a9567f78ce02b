"""The API's contract at its edges: every number it takes has bounds (out of range is a 422, never a 500),
HEAD answers wherever GET does, a method a path does not take is a 405 with `Allow`, and the OpenAPI
schema lists every status the API answers."""

from __future__ import annotations

import asyncio
import json

import httpx

from test_service import AUTH, asgi_client, make_app, stream_spec, uvicorn_server  # noqa: F401 (fixture)

TOO_BIG = 2**63  # one past SQLite's largest integer
BIG_ID_PATHS = (f"/api/highlights/{TOO_BIG}", f"/api/highlights/{TOO_BIG}/thumbnail.jpg",
                f"/api/highlights/{TOO_BIG}/clip.mp4", f"/api/highlights?before={TOO_BIG}", f"/api/events?after={TOO_BIG}",
                "/api/highlights/0", "/api/highlights/-1/clip.mp4", "/api/highlights?before=0", "/api/events?after=-1",
                f"/api/highlights?limit={TOO_BIG}", "/api/highlights?since=1e300")


def assert_422_json(response: httpx.Response, what) -> None:
    assert response.status_code == 422, (what, response.status_code, response.text)
    assert response.headers["content-type"] == "application/json", what
    assert response.json()["detail"], what


async def test_numbers_out_of_range_answer_422_json(make_app):
    service, app = make_app()
    async with asyncio.timeout(60), asgi_client(app) as client:
        for path in BIG_ID_PATHS:
            assert_422_json(await client.get(path), path)
        # The largest id is fine: nothing there.
        assert (await client.get(f"/api/highlights/{TOO_BIG - 1}")).status_code == 404
        assert (await client.get(f"/api/highlights?before={TOO_BIG - 1}")).json() == []
        # Last-Event-ID out of range: refused before any streaming starts.
        for value in (str(TOO_BIG), "-1", "x"):
            async with client.stream("GET", "/api/events", headers={"Last-Event-ID": value}) as response:
                assert response.headers["content-type"] == "application/json"
                await response.aread()
                assert_422_json(response, value)
        # Numbers in bodies and query strings: JSON's 1e400 parses to infinity, which the 422 must still carry.
        for fps in ("1e400", "-1e400", "0", "31", str(TOO_BIG)):
            raw = json.dumps(stream_spec("cam", "rtsp://127.0.0.1:1/x", fps="FPS")).replace('"FPS"', fps)
            response = await client.post("/api/streams", content=raw, headers={"Content-Type": "application/json"})
            assert_422_json(response, fps)
        for query in ("fps=1e400", "fps=nan", "fps=0", "fps=31"):
            response = await client.post(f"/api/whip?sentence=a&{query}", content=b"v=0", headers={"Content-Type": "application/sdp"})
            assert_422_json(response, query)
        assert service.streams == {}


async def test_head_answers_like_get_and_405_says_allow(make_app):
    service, app = make_app()
    async with asyncio.timeout(60), asgi_client(app) as client:
        for path in ("/healthz", "/api/streams", "/api/highlights", "/metrics", "/openapi.json", "/docs", "/",
                     "/api/highlights/99", "/api/streams/nope"):
            get, head = await client.get(path), await client.head(path)
            assert head.status_code == get.status_code, path
            assert head.headers["content-type"] == get.headers["content-type"], path
            assert head.content == b"", path
        # HEAD on the event stream: the headers, and the stream is not left open (no subscriber stays).
        head = await client.head("/api/events")
        assert head.status_code == 200 and head.headers["content-type"].startswith("text/event-stream")
        assert service.bus.subscribers == set()
        assert (await client.head("/api/streams", headers={"Authorization": ""})).status_code == 401
        for method, path, allow in (("PUT", "/api/streams", "GET, HEAD, POST"), ("POST", "/healthz", "GET, HEAD"),
                                    ("POST", "/api/streams/cam", "DELETE, GET, HEAD, PATCH"),
                                    ("GET", "/api/whip", "POST"), ("PUT", "/api/highlights/1", "DELETE, GET, HEAD"),
                                    ("GET", "/api/whip/abc", "DELETE")):
            response = await client.request(method, path)
            assert response.status_code == 405, (method, path, response.text)
            assert response.headers["allow"] == allow, (method, path)
            assert response.json() == {"detail": "Method Not Allowed"}
    # On a real server too: HEAD on the event stream answers its headers and ends.
    service, app = make_app()
    async with asyncio.timeout(60), app.router.lifespan_context(app), uvicorn_server(app) as url:
        async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=10) as client:
            head = await client.head("/api/events")
            assert head.status_code == 200 and head.content == b""
            assert (await client.head("/api/streams")).headers["content-length"] == "2"


async def test_the_schema_lists_every_status_the_api_answers(make_app):
    service, app = make_app(allow_local=False)
    async with asyncio.timeout(60), asgi_client(app) as client:
        schema = (await client.get("/openapi.json")).json()
        responses = {(method.upper(), path): set(operation["responses"]) for path, operations in schema["paths"].items()
                     for method, operation in operations.items()}
        for (method, path), statuses in responses.items():
            if path != "/healthz":
                assert "401" in statuses, (method, path)
            if method in ("POST", "PATCH"):
                assert "413" in statuses, (method, path)
        expected = {("POST", "/api/streams"): {"201", "400", "409", "422", "503"},
                    ("PATCH", "/api/streams/{name}"): {"200", "404", "422"},
                    ("GET", "/api/streams/{name}"): {"404"}, ("DELETE", "/api/streams/{name}"): {"204", "404"},
                    ("GET", "/api/highlights/{highlight_id}"): {"404", "422"},
                    ("GET", "/api/highlights/{highlight_id}/thumbnail.jpg"): {"404", "422"},
                    ("GET", "/api/highlights/{highlight_id}/clip.mp4"): {"404", "422"},
                    ("GET", "/api/events"): {"200", "422"}, ("POST", "/api/whip"): {"201", "400", "415", "422"},
                    ("POST", "/api/webrtc/offer"): {"200", "400", "409", "422"},
                    ("DELETE", "/api/whip/{session_id}"): {"404"}}
        for operation, statuses in expected.items():
            assert statuses <= responses[operation], (operation, responses[operation])
        # What the API really answers is in the schema, for each of these requests.
        requests = [("POST", "/api/streams", "/api/streams", {"json": stream_spec("cam", "/etc/passwd")}),
                    ("POST", "/api/streams", "/api/streams", {"content": b"x" * 100_000, "headers": {"Content-Type": "application/json"}}),
                    ("GET", "/api/streams/nope", "/api/streams/{name}", {}),
                    ("GET", f"/api/highlights/{TOO_BIG}", "/api/highlights/{highlight_id}", {}),
                    ("POST", "/api/whip?sentence=a", "/api/whip", {"content": b"v=0"}),
                    ("POST", "/api/whip?sentence=a", "/api/whip", {"content": b"v=0", "headers": {"Content-Type": "application/sdp"}}),
                    ("DELETE", "/api/whip/nope", "/api/whip/{session_id}", {}),
                    ("GET", "/api/streams", "/api/streams", {"headers": {"Authorization": ""}})]
        for method, url, path, options in requests:
            response = await client.request(method, url, **options)
            assert response.status_code >= 400, (method, url)
            assert str(response.status_code) in responses[(method, path)], (method, url, response.status_code)
            assert response.json()["detail"]

"""What the service must not give away: camera passwords (in events, logs, sinks, API answers, error
messages, files others can read) and the server's files (reference images an API client names)."""

from __future__ import annotations

import asyncio
import json
import logging
import stat
from pathlib import Path

import av
import httpx
import numpy as np
import pytest

from peers import free_port
from test_service import (AUTH, RecordingSink, asgi_client, make_app, rtsp_server, scenes, stored_events,  # noqa: F401 (fixtures)
                          stream_spec, uvicorn_server, wait_for)

from cliplive.models import encoder as encoder_module
from cliplive.stream.live import mask_url

SECRET = "CamPassw0rd"


def test_mask_url():
    assert mask_url(f"rtsp://admin:{SECRET}@127.0.0.1:8554/cam") == "rtsp://admin:***@127.0.0.1:8554/cam"
    assert mask_url(f"cannot open: 'rtsps://a:{SECRET}@cam.local/x?y=1' refused") == "cannot open: 'rtsps://a:***@cam.local/x?y=1' refused"
    assert mask_url("rtsp://cam:554/x") == "rtsp://cam:554/x" and mask_url("http://user@h/x") == "http://user@h/x"
    assert mask_url("/dev/video0") == "/dev/video0"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_camera_passwords_never_leave_the_stream_spec(make_app, rtsp_server, caplog, tmp_path):
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.INFO, logger="cliplive")  # an earlier in-process `cliplive` main() set it to WARNING
    cam = rtsp_server.replace("rtsp://", f"rtsp://admin:{SECRET}@")  # GStreamer's server asks for no password
    dead = f"rtsp://admin:{SECRET}@127.0.0.1:{free_port()}/cam"  # refused: it reconnects, again and again
    fast = {"open_timeout": 1.0, "stall_timeout": 1.0}
    service, app = make_app([stream_spec("cam", cam), stream_spec("dead", dead, options=fast)], buffer_minutes=1)
    sink = RecordingSink()
    service.add_sink(sink)
    answers: list[str] = []
    async with asyncio.timeout(60), uvicorn_server(app) as url, httpx.AsyncClient(base_url=url, headers=AUTH, timeout=10) as client:
        posted = stream_spec("posted", f"rtsp://admin:{SECRET}@127.0.0.1:{free_port()}/x", options=fast)
        response = await client.post("/api/streams", json=posted)
        assert response.status_code == 201, response.text
        answers.append(response.text)
        refused = await client.post("/api/streams", json=stream_spec("bad", f"ftp://admin:{SECRET}@127.0.0.1/x"))
        assert refused.status_code == 400 and "ftp://admin:***@" in refused.text, refused.text
        answers.append(refused.text)

        async def settled():
            streams = {s["name"]: s for s in (await client.get("/api/streams")).json()}
            return (streams["cam"]["state"] == "live" and streams["dead"]["metrics"]["reconnects"] >= 2
                    and streams["posted"]["metrics"]["reconnects"] >= 1)

        await wait_for(settled, 40, "cam live, dead and posted reconnecting", every=0.5)
        await asyncio.sleep(1.5)  # the recorders' failed connections are logged too
        for path in ("/api/streams", "/api/streams/cam", "/api/streams/dead", "/api/streams/posted", "/api/highlights"):
            answers.append((await client.get(path)).text)
        shown_dead = json.loads(answers[-3])
        assert shown_dead["source"] == dead.replace(SECRET, "***") and shown_dead["last_status"]

        last = service.store.events_after(0, 10_000)[-1].id
        sse: list[str] = []
        async with client.stream("GET", "/api/events", params={"after": 0}) as response:
            async for line in response.aiter_lines():
                sse.append(line)
                if line == f"id: {last}":
                    break
        db = service.settings.data_dir / "cliplive.db"
        files = [db, db.with_name("cliplive.db-wal"), db.with_name("cliplive.db-shm")]
        assert all(f.exists() and mode(f) == 0o600 for f in files), {str(f): f.exists() and oct(mode(f)) for f in files}

    events = list(stored_events(db).values())
    connecting = [e for e in events if e["kind"] == "status" and e["state"] == "connecting"]
    assert {e["stream"] for e in connecting} == {"cam", "dead", "posted"}
    assert all(e["detail"]["url"].startswith("rtsp://admin:***@") for e in connecting), connecting
    assert {e["stream"] for e in events if e["kind"] == "status" and e["state"] == "reconnecting"} >= {"dead", "posted"}
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "admin:***@" in logged  # the source is logged, masked
    shown = {"stored events": json.dumps(events), "SSE": "\n".join(sse), "logs": logged,
             "sink": json.dumps(sink.events), "API answers": "\n".join(answers)}
    assert sink.events and any('"connecting"' in line for line in sse)
    assert {where: SECRET in text for where, text in shown.items()} == dict.fromkeys(shown, False)


async def test_patch_names_no_server_file_whatever_the_streams_origin(make_app, scenes, monkeypatch, tmp_path):
    opened: list[str] = []
    read_image = encoder_module.read_image

    def recording(path):
        opened.append(str(path))
        return read_image(path)

    monkeypatch.setattr(encoder_module, "read_image", recording)
    dead = "rtsp://10.255.255.1/cam"  # a private address: the API allows it
    real_open = av.open

    def no_private_traffic(url, *args, **kwargs):  # tests send nothing to private ranges: that camera never answers
        if "10.255.255.1" in str(url):
            raise OSError(111, "Connection refused")
        return real_open(url, *args, **kwargs)

    monkeypatch.setattr(av, "open", no_private_traffic)
    service, app = make_app([stream_spec("cfgcam", str(scenes))], allow_local=False)
    async with asyncio.timeout(30), asgi_client(app) as client:
        assert (await client.post("/api/streams", json=stream_spec("apicam", dead))).status_code == 201
        await service.add_stream(stream_spec_model("sess", dead), "session")
        for name in ("cfgcam", "apicam", "sess"):
            response = await client.patch(f"/api/streams/{name}", json={"images": ["/etc/shadow"]})
            assert response.status_code == 400, (name, response.text)
            assert response.json()["detail"] == ("reference images are files on the server: "
                                                 "the server's config does not allow local sources")
            response = await client.patch(f"/api/streams/{name}", json={"sentences": ["a cat"], "images": ["/etc/passwd"]})
            assert response.status_code == 400, (name, response.text)
            assert (await client.get(f"/api/streams/{name}")).json()["images"] == []
        # Images on create: an API stream, a session's.
        response = await client.post("/api/streams", json=stream_spec("img", dead, images=["/etc/shadow"]))
        assert response.status_code == 400, response.text
        with pytest.raises(Exception, match="does not allow local sources"):
            await service.add_stream(stream_spec_model("sess2", dead, images=["/etc/shadow"]), "session")
        assert opened == []
        # Sentences alone are fine on every stream.
        for name in ("cfgcam", "apicam", "sess"):
            assert (await client.patch(f"/api/streams/{name}", json={"sentences": ["a cat"]})).status_code == 200

    # The control: where local sources are allowed, the PATCH does open the image (read_image is what opens it).
    image = tmp_path / "red.png"
    from PIL import Image

    Image.fromarray(np.full((32, 32, 3), (255, 0, 0), np.uint8)).save(image)
    service, app = make_app([stream_spec("cfgcam", str(scenes))], allow_local=True)
    async with asyncio.timeout(30), asgi_client(app) as client:
        response = await client.patch("/api/streams/cfgcam", json={"images": [str(image)]})
        assert response.status_code == 200, response.text
    assert opened == [str(image)]


def stream_spec_model(name: str, source: str, **extra):
    from cliplive.server.config import StreamSpec

    return StreamSpec.model_validate(stream_spec(name, source, **extra))

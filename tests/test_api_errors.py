"""The API's one error mapping: the client's mistakes are 4xx with their message, what cannot be had is
503, and a bug is a JSON 500 with its traceback in the log, never a 400 blaming the client."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

import httpx
import pytest

from cliplive.models.errors import InputError, Unavailable
from cliplive.server.app import create_app
from cliplive.server.config import Config
from cliplive.server.service import Service

TOKEN = "test-token-0123456789abcdef"


@pytest.fixture
def service_app(tmp_path, tiny_clip):
    config = Config.model_validate({"server": {"data_dir": str(tmp_path / "data")}})
    service = Service(config, tiny_clip)
    return service, create_app(service, TOKEN)


@asynccontextmanager
async def client_of(app):
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app)  # raise_app_exceptions stays on: an exception escaping the app fails the test
        async with httpx.AsyncClient(transport=transport, base_url="http://cliplive",
                                     headers={"Authorization": f"Bearer {TOKEN}"}) as client:
            yield client


class Gone(InputError):
    http_status = 410


@pytest.mark.parametrize("error", [RuntimeError("boom"), ValueError("a bug, not the client's mistake"), KeyError("x")])
async def test_an_unexpected_exception_is_a_logged_json_500(service_app, monkeypatch, caplog, error):
    service, app = service_app

    def broken(name):
        raise error

    async with asyncio.timeout(30), client_of(app) as client:
        monkeypatch.setattr(service, "stream", broken)
        caplog.set_level(logging.ERROR, logger="cliplive")
        response = await client.get("/api/streams/cam")
        assert response.status_code == 500
        assert response.json() == {"detail": "internal error"}  # nothing of the bug's message leaks out
        logged = [r for r in caplog.records if r.levelno == logging.ERROR and r.exc_info]
        assert len(logged) == 1 and logged[0].exc_info[1] is error and "/api/streams/cam" in logged[0].getMessage()
        assert (await client.get("/healthz")).json() == {"status": "ok"}  # and the server goes on


async def test_input_errors_answer_their_status_and_unavailable_503(service_app, monkeypatch, caplog):
    service, app = service_app
    async with asyncio.timeout(30), client_of(app) as client:
        # The client's mistakes, from the real code paths.
        refused = await client.post("/api/streams", json={"name": "cam", "source": "file:///etc/passwd", "sentences": ["a dog"]})
        assert refused.status_code == 400 and "source refused" in refused.json()["detail"]
        missing = await client.get("/api/streams/nope")
        assert missing.status_code == 404 and missing.json() == {"detail": "not found: nope"}
        invalid = await client.patch("/api/streams/nope", json={"sentences": []})
        assert invalid.status_code == 422 and invalid.json()["detail"]
        # Any InputError subclass answers its own status; Unavailable is 503; both with their message.
        for error, status in ((Gone("stream cam is gone"), 410), (Unavailable("the encoder is not loaded"), 503)):
            def refuse(name, error=error):
                raise error

            monkeypatch.setattr(service, "stream", refuse)
            response = await client.get("/api/streams/cam")
            assert response.status_code == status and response.json() == {"detail": str(error)}
    assert not [r for r in caplog.records if r.exc_info], "a refusal is not a bug: no traceback"

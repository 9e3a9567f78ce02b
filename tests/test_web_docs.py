"""The API docs work offline and without a followed link carrying the token: `/docs`, `/redoc`, their
files, `/openapi.json` and `/favicon.ico` are public and refer to no other host; the API stays guarded."""

from __future__ import annotations

import re

import httpx
import pytest

from cliplive.server.app import create_app
from cliplive.server.config import Config
from cliplive.server.service import Service

TOKEN = "docs-test-token-0123456789"
URL = re.compile(r"""(?:https?:)?//[A-Za-z0-9.-]+""")


@pytest.fixture
def client(tmp_path, tiny_clip):
    service = Service(Config.model_validate({"server": {"data_dir": str(tmp_path / "data")}}), tiny_clip)
    return httpx.AsyncClient(transport=httpx.ASGITransport(create_app(service, TOKEN)), base_url="http://cliplive")


async def test_docs_are_public_and_served_locally(client):
    async with client:
        docs = await client.get("/docs")
        assert docs.status_code == 200 and docs.headers["content-type"].startswith("text/html")
        assert not URL.findall(docs.text), "the docs page must not load anything from another host"
        assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", docs.text)
        assert {"/docs-assets/swagger-ui-bundle.js", "/docs-assets/swagger-ui.css", "/docs.js", "/favicon.svg"} <= set(assets)
        assert '"persistAuthorization": true' in docs.text
        for path in assets:
            response = await client.get(path)
            assert response.status_code == 200 and len(response.content) > 100, path
        redoc = await client.get("/redoc")
        assert redoc.status_code == 200 and not URL.findall(redoc.text)
        assert (await client.get("/docs-assets/redoc.standalone.js")).status_code == 200

        schema = await client.get("/openapi.json")
        assert schema.status_code == 200
        assert schema.json()["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
        assert "/api/streams" in schema.json()["paths"]
        favicon = await client.get("/favicon.ico")
        assert favicon.status_code == 200 and favicon.headers["content-type"].startswith("image/svg+xml")


async def test_the_api_still_needs_the_token(client):
    async with client:
        assert (await client.get("/api/streams")).status_code == 401
        assert (await client.get("/docs-assets/favicon.png")).status_code == 401  # only the files the docs use
        assert (await client.get("/api/streams", headers={"Authorization": f"Bearer {TOKEN}"})).status_code == 200

"""The ASGI app (the API, `/healthz`, `/metrics`, and the guards around them) and the server that runs it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from prometheus_client import generate_latest
import uvicorn

from cliplive.server import api, web, webrtc_api
from cliplive.server.metrics import CONTENT_TYPE, registry_for
from cliplive.server.security import BearerAuth, BodySizeLimit
from cliplive.server.service import Service

log = logging.getLogger(__name__)


def create_app(service: Service, token: str | None) -> FastAPI:
    """The service's app; it starts and stops `service` with its lifespan. `token` None: no auth."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(title="cliplive", summary="Live language-guided video highlights", version="1", lifespan=lifespan)
    app.state.service = service
    app.include_router(api.router)
    app.include_router(webrtc_api.router)
    registry = registry_for(service)

    @app.get("/healthz", tags=["service"])
    async def healthz() -> dict:
        """Liveness; the only endpoint without a token."""
        return {"status": "ok"}

    @app.get("/metrics", response_class=Response, tags=["service"], responses={200: {"content": {CONTENT_TYPE: {}}}})
    async def metrics() -> Response:
        """Per-stream fps, drops and latency, encoder batches and throughput, in the Prometheus text format."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, error: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=error)
        return JSONResponse({"detail": "internal error"}, status_code=500)

    app.mount("/", web.static_files(), name="web")  # last: it takes every path no route did
    app.openapi = lambda: app.openapi_schema or _openapi_with_bearer(app)
    # Outermost last: CORS answers preflights, auth refuses before any body is read, then the size cap.
    app.add_middleware(BodySizeLimit, max_bytes=service.settings.max_body_bytes)
    app.add_middleware(BearerAuth, token=token, public_paths=("/healthz", *web.PUBLIC_PATHS))
    if service.settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=service.settings.cors_origins, allow_methods=["*"],
                           allow_headers=["Authorization", "Content-Type", "Last-Event-ID"])
    return app


def _openapi_with_bearer(app: FastAPI) -> dict:
    """The generated schema, saying that every operation but /healthz takes the bearer token."""
    schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
    schema.setdefault("components", {})["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    schema["security"] = [{"bearer": []}]
    schema["paths"]["/healthz"]["get"]["security"] = []
    app.openapi_schema = schema
    return schema


class GracefulServer(uvicorn.Server):
    """On SIGINT/SIGTERM, stops the streams before the HTTP side: their closing `end` events are stored
    and still reach connected clients, and the open event streams end, which uvicorn's graceful
    shutdown would otherwise wait on. A second SIGINT exits at once."""

    def __init__(self, config: uvicorn.Config, service):
        super().__init__(config)
        self.service = service
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False

    async def serve(self, sockets=None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig, frame) -> None:
        if self._stopping or self._loop is None:
            super().handle_exit(sig, frame)
            return
        self._stopping = True
        # A signal handler may run in the middle of the loop's own work: hand over through the thread-safe door.
        self._loop.call_soon_threadsafe(lambda: self._loop.create_task(self._stop_then_exit(sig, frame)))

    async def _stop_then_exit(self, sig, frame) -> None:
        try:
            await self.service.stop()
        finally:
            super().handle_exit(sig, frame)

"""The ASGI app (the API, `/healthz`, `/metrics`, and the guards around them) and the server that runs it.

Errors map to responses in one place, here: an `InputError` (cliplive.models.errors) answers its
`http_status` (400 unless the class says otherwise: 404 not found, 409 exists) and an `Unavailable` 503,
both as JSON `{"detail": message}`; a pydantic ValidationError of what the client sent answers 422
(`api.client_errors`); any other exception is a bug: its traceback is logged and the client gets a JSON
500 `{"detail": "internal error"}`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from prometheus_client import generate_latest
from starlette.routing import Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send
import uvicorn

from cliplive.models.errors import InputError, Unavailable, one_line
from cliplive.server import api, web, webrtc_api
from cliplive.server.metrics import CONTENT_TYPE, registry_for
from cliplive.server.security import BearerAuth, BodySizeLimit, send_json
from cliplive.server.service import Service
from cliplive.server.tokens import VIEWER_METHODS, Credentials
from cliplive.stream.live import mask_url

log = logging.getLogger(__name__)


def create_app(service: Service, token: str | Credentials | None) -> FastAPI:
    """The service's app; it starts and stops `service` with its lifespan. `token`: who may use it (a plain
    string is one admin token); None: no auth."""
    credentials = Credentials(admin_token=token) if isinstance(token, str) else token

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(title="cliplive", summary="Live language-guided video highlights", version="1", lifespan=lifespan,
                  docs_url=None, redoc_url=None)  # web.add_docs serves them, with no CDN
    app.state.service = service
    app.include_router(api.router)
    app.include_router(webrtc_api.router)
    registry = registry_for(service)

    @app.get("/healthz", tags=["service"])
    async def healthz() -> dict:
        """Liveness; needs no token (nor do the web page, the docs and the schema)."""
        return {"status": "ok"}

    @app.get("/metrics", response_class=Response, tags=["service"], responses={200: {"content": {CONTENT_TYPE: {}}}})
    async def metrics() -> Response:
        """Per-stream fps, drops and latency, encoder batches and throughput, in the Prometheus text format."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE)

    async def known_error(request: Request, error: InputError | Unavailable) -> JSONResponse:
        return JSONResponse({"detail": mask_url(one_line(error))}, status_code=error.http_status)

    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        """FastAPI's 422, with the offending input JSON can't hold (`1e400` parses to inf) as a string."""
        return JSONResponse({"detail": _finite(jsonable_encoder(error.errors()))}, status_code=422)

    app.add_exception_handler(InputError, known_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(Unavailable, known_error)

    web.add_docs(app)
    web.add_whoami(app)
    app.mount("/", web.static_files(), name="web")  # last: it takes every path no route did
    app.openapi = lambda: app.openapi_schema or _openapi_with_bearer(app)
    # Outermost last: CORS answers preflights, auth refuses before any body is read, then the size cap;
    # innermost, what no exception handler answered becomes a logged JSON 500.
    app.add_middleware(MethodsAllowed, routes=app.router.routes)
    app.add_middleware(InternalErrors)
    app.add_middleware(BodySizeLimit, max_bytes=service.settings.max_body_bytes)
    app.add_middleware(BearerAuth, credentials=credentials, public_paths=("/healthz", *web.PUBLIC_PATHS))
    if service.settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=service.settings.cors_origins, allow_methods=["*"],
                           allow_headers=["Authorization", "Content-Type", "Last-Event-ID"])
    return app


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


class InternalErrors:
    """An exception that no handler turned into a response is a bug: its traceback is logged and the client
    gets a JSON 500. (Starlette's own ServerErrorMiddleware would answer plain text and re-raise it into
    the server, which logs it a second time.) Once a response has started, it cannot be replaced: the
    error is logged and re-raised, and the server closes the connection."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception:
            log.exception("internal error: %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            await send_json(send, 500, {"detail": "internal error"})


METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


class MethodsAllowed:
    """HEAD answers wherever GET does (the GET's status and headers, no body), and a method that a path's
    routes do not take answers a JSON 405 whose `Allow` lists the methods they do (all of the path's routes:
    Starlette would name one route's only, or let the static files at "/" answer `GET, HEAD`)."""

    def __init__(self, app: ASGIApp, routes: list):
        self.app, self.routes = app, routes

    def takes(self, scope: Scope, method: str) -> bool:
        """Whether some route takes `method` on this path (asked of the routes, included routers too; the
        mounts, which take any path, left out)."""
        return any(not isinstance(route, Mount) and route.matches({**scope, "method": method})[0] is Match.FULL
                   for route in self.routes)

    def allowed(self, scope: Scope) -> set[str]:
        methods = {method for method in METHODS if self.takes(scope, method)}
        return methods | {"HEAD"} if "GET" in methods else methods

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["method"] != "HEAD" and self.takes(scope, scope["method"])):
            await self.app(scope, receive, send)  # the common case: one pass over the routes, as routing makes
            return
        allowed, method = self.allowed(scope), scope["method"]
        if allowed and method not in allowed:
            await send_json(send, 405, {"detail": "Method Not Allowed"}, [(b"allow", ", ".join(sorted(allowed)).encode())])
            return
        if method != "HEAD" or not allowed:  # HEAD on the static files: they answer it themselves
            await self.app(scope, receive, send)
            return
        finished = False

        async def headers_only(message: Message) -> None:
            nonlocal finished
            if message["type"] == "http.response.start":
                await send(message)
            elif not finished:  # the body ends here; what the app still sends is dropped (a stream then
                finished = True  # sees the client gone, as the server's receive says http.disconnect)
                await send({"type": "http.response.body", "body": b"", "more_body": False})

        await self.app({**scope, "method": "GET"}, receive, headers_only)


def _openapi_with_bearer(app: FastAPI) -> dict:
    """The generated schema, saying that every operation but /healthz takes the bearer token (and may answer
    401), that every one a viewer token may not make may answer 403, and that every one with a body may
    answer 413."""
    schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
    schema.setdefault("components", {})["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    schema["security"] = [{"bearer": []}]
    schema["paths"]["/healthz"]["get"]["security"] = []
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorDetail"}}}}
    schema["components"].setdefault("schemas", {}).setdefault("ErrorDetail", api.ErrorDetail.model_json_schema())
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            if path != "/healthz":
                operation["responses"].setdefault("401", {"description": "missing or invalid bearer token", **error})
            if method.upper() not in VIEWER_METHODS:
                operation["responses"].setdefault("403", {"description": "a viewer token may not do this: it takes an admin token", **error})
            if "requestBody" in operation:
                operation["responses"].setdefault("413", {"description": "request body too large", **error})
    app.openapi_schema = schema
    return schema


class GracefulServer(uvicorn.Server):
    """On SIGINT/SIGTERM, stops the streams before the HTTP side: their closing `end` events are stored
    and still reach connected clients, and the open event streams end, which uvicorn's graceful
    shutdown would otherwise wait on. A second SIGINT exits at once. After a stop by a signal, the process
    exits 0 (uvicorn would raise the signal again once stopped, and the process die by it).
    `on_listening` runs once the port is bound, before the "serving on" line."""

    def __init__(self, config: uvicorn.Config, service, on_listening=None):
        super().__init__(config)
        self.service, self.on_listening = service, on_listening
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False

    async def serve(self, sockets=None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            try:
                yield
            finally:
                getattr(self, "_captured_signals", []).clear()  # stopped gracefully: not raised again on the way out

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets)
        if self.servers and self.servers[0].sockets:  # the port actually bound (the config may say 0: any)
            if self.on_listening is not None:
                self.on_listening()
            port = self.servers[0].sockets[0].getsockname()[1]
            host = f"[{self.config.host}]" if ":" in self.config.host else self.config.host
            print(f"cliplive: serving on http://{host}:{port} (API docs at /docs)", file=sys.stderr, flush=True)

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

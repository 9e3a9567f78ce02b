"""The API's guards, as plain ASGI middleware so they run before any routing or body parsing:
a bearer token on every path but the public ones, whose role must allow the request
(cliplive.server.tokens), and a cap on request body size."""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import partial
from urllib.parse import parse_qs

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from cliplive.server.tokens import Credentials, Identity, allows


async def send_json(send: Send, status: int, body: dict, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()), *headers]})
    await send({"type": "http.response.body", "body": payload})


class BearerAuth:
    """`Authorization: Bearer <token>` on every request but `public_paths`: 401 without a known token, 403
    when the token's role does not allow the request (`tokens.allows`); a refused WebSocket is closed with
    1008. The token's `Identity` reaches the app as `request.state.token`, and `request.state.token_held()`
    says whether that token is still valid (a long-lived event stream ends once it is removed).
    `credentials` None: no auth.

    Browsers cannot set headers on EventSource and WebSocket connections, so `query_token_paths` also
    take the token as `?access_token=` (it may then appear in proxies' access logs)."""

    def __init__(self, app: ASGIApp, credentials: Credentials | None, public_paths: Iterable[str] = ("/healthz",),
                 query_token_paths: Iterable[str] = ("/api/events", "/api/events/ws")):
        self.app, self.credentials = app, credentials
        self.public_paths, self.query_token_paths = frozenset(public_paths), frozenset(query_token_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self.credentials is None or scope["path"] in self.public_paths:
            await self.app(scope, receive, send)
            return
        identity = self._identify(scope)
        method = "WEBSOCKET" if scope["type"] == "websocket" else scope["method"]
        if identity is None:
            await self._refuse(scope, receive, send, 401, "missing or invalid bearer token")
        elif not allows(identity.role, method):
            await self._refuse(scope, receive, send, 403, f"this token's role ({identity.role}) may not {method} "
                                                          f"{scope['path']}: that takes an admin token")
        else:
            held = partial(self.credentials.holds, identity)  # an event stream asks it now and then
            await self.app({**scope, "state": {**scope.get("state", {}), "token": identity, "token_held": held}}, receive, send)

    def _identify(self, scope: Scope) -> Identity | None:
        header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer":
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            given = query.get("access_token", [""])[0] if scope["path"] in self.query_token_paths else ""
        return self.credentials.identify(given.strip()) if given.strip() else None

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, detail: str) -> None:
        if scope["type"] == "websocket":
            await receive()  # websocket.connect; refusing it answers the handshake with 403
            await send({"type": "websocket.close", "code": 1008, "reason": detail[:120]})  # a close reason fits 123 bytes
        elif status == 401:
            await send_json(send, 401, {"detail": detail}, [(b"www-authenticate", b'Bearer realm="cliplive"')])
        else:
            await send_json(send, status, {"detail": detail})


class BodySizeLimit:
    """Refuse request bodies over `max_bytes` with 413, by Content-Length up front, or while a body
    without one (chunked) is read."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await send_json(send, 413, {"detail": f"request body over {self.max_bytes} bytes"})
            return
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise HTTPException(413, f"request body over {self.max_bytes} bytes")  # FastAPI passes it on as is
            return message

        await self.app(scope, limited_receive, send)

"""The API's guards, as plain ASGI middleware so they run before any routing or body parsing:
a bearer token on every path but the public ones, and a cap on request body size."""

from __future__ import annotations

import hmac
import json
import os
import secrets
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import parse_qs

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from cliplive.models.errors import InputError

TOKEN_FILE = "token"


def load_or_create_token(data_dir: Path) -> tuple[str, bool]:
    """The token stored in `data_dir`, or a new one written there (mode 0600); True when new."""
    path = data_dir / TOKEN_FILE
    if path.exists():
        if path.stat().st_mode & 0o077:  # written by hand, or by an older version
            os.chmod(path, 0o600)
        token = path.read_text(encoding="utf-8").strip()
        if len(token) < 16:
            raise InputError(f"{path}: the stored token is too short; delete the file to generate a new one")
        return token, False
    token = secrets.token_urlsafe(32)
    save_token(data_dir, token)
    return token, True


def save_token(data_dir: Path, token: str) -> None:
    """Write a new token into `data_dir` (mode 0600); an existing token file is never overwritten."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with os.fdopen(os.open(data_dir / TOKEN_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w", encoding="utf-8") as f:
        f.write(token + "\n")


async def send_json(send: Send, status: int, body: dict, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()), *headers]})
    await send({"type": "http.response.body", "body": payload})


class BearerAuth:
    """`Authorization: Bearer <token>` on every request but `public_paths`, compared in constant time.

    Browsers cannot set headers on EventSource and WebSocket connections, so `query_token_paths` also
    take the token as `?access_token=` (it may then appear in proxies' access logs)."""

    def __init__(self, app: ASGIApp, token: str | None, public_paths: Iterable[str] = ("/healthz",),
                 query_token_paths: Iterable[str] = ("/api/events", "/api/events/ws")):
        self.app, self.token = app, token
        self.public_paths, self.query_token_paths = frozenset(public_paths), frozenset(query_token_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self.token is None or scope["path"] in self.public_paths \
                or self._authorized(scope):
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await receive()  # websocket.connect; refusing it answers the handshake with 403
            await send({"type": "websocket.close", "code": 1008, "reason": "missing or invalid token"})
        else:
            await send_json(send, 401, {"detail": "missing or invalid bearer token"},
                            [(b"www-authenticate", b'Bearer realm="cliplive"')])

    def _authorized(self, scope: Scope) -> bool:
        header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer":
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            given = query.get("access_token", [""])[0] if scope["path"] in self.query_token_paths else ""
        return bool(given) and hmac.compare_digest(given.strip().encode(), self.token.encode())


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

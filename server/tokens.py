"""API tokens with roles, stored hashed in `DATA_DIR/tokens.json`, and what each role may do.

Roles (`ROLES`):
- `viewer` reads: every safe request (GET, HEAD, OPTIONS: streams, highlights, thumbnails, clips, events
  over SSE, `/metrics`, `/api/whoami`) and the event WebSocket;
- `admin` may do everything: add, change and delete streams, send a camera over WebRTC or WHIP (which
  creates a stream).
The rule is by method (`allows`), so every route that changes something is an admin's without a list to
keep in step with the routes; `BearerAuth` (cliplive.server.security) applies it, in one place.

The file holds each token's name, role, creation time and SHA-256 hash, never the token: it is written
once, by `cliplive token add` (or by `serve` at its first start), which shows it only then. `serve` reads
the file again when it changes (`Credentials`), so added and removed tokens take effect without a restart.
The plain `DATA_DIR/token` file of earlier versions becomes an admin token at the next start.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from cliplive.models.errors import InputError

log = logging.getLogger(__name__)

ROLES = ("viewer", "admin")
VIEWER_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})  # the safe methods (RFC 9110): they change nothing
TOKENS_FILE = "tokens.json"
LEGACY_TOKEN_FILE = "token"  # one plain admin token, as versions before roles kept it
TOKEN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
CONFIG_TOKEN_NAME = "config"  # the name of the config file's `server.token`, an admin's


@dataclass(frozen=True)
class Token:
    name: str
    role: str
    sha256: str  # hex digest of the secret
    created: str  # ISO 8601, UTC


@dataclass(frozen=True)
class Identity:
    """Who a request's token says it is."""
    name: str | None  # None: no auth at all (`serve --no-auth`)
    role: str
    sha256: str | None = None  # the token's hash: a long request (an event stream) checks it is still there


NO_AUTH = Identity(None, "admin")  # without tokens, every client may do everything


def allows(role: str, method: str) -> bool:
    """Whether `role` may make a request with `method` ("WEBSOCKET" for the event WebSocket, which only reads)."""
    return role == "admin" or method in VIEWER_METHODS or method == "WEBSOCKET"


def digest(secret: str) -> str:
    """SHA-256, not a slow password hash: the tokens are 32 random bytes, so their hash cannot be guessed back
    any faster than the token itself; a slow KDF only helps secrets a person chose. Fast also means every
    request can be checked against every token."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def check_role(role: str) -> str:
    if role not in ROLES:
        raise InputError(f"unknown role {role!r}: {' or '.join(ROLES)}")
    return role


def check_name(name: str) -> str:
    if not TOKEN_NAME.fullmatch(name):
        raise InputError(f"token name {name!r}: letters, digits, '_', '.' and '-' only, 64 at most, starting with a letter or digit")
    return name


def free_name(tokens: list[Token], role: str) -> str:
    """The role itself, or the role numbered (`viewer-2`), whichever no token has."""
    taken = {t.name for t in tokens}
    return next(name for name in (role, *(f"{role}-{n}" for n in range(2, len(taken) + 3))) if name not in taken)


def read_legacy_token(data_dir: Path) -> str | None:
    """The plain token an earlier version stored in `data_dir`, if there is one (its mode made 0600)."""
    path = data_dir / LEGACY_TOKEN_FILE
    if not path.exists():
        return None
    if path.stat().st_mode & 0o077:  # written by hand, or by an older version
        os.chmod(path, 0o600)
    secret = path.read_text(encoding="utf-8").strip()
    if len(secret) < 16:
        raise InputError(f"{path}: the stored token is too short; delete the file to generate a new one")
    return secret


class TokenFile:
    """`DATA_DIR/tokens.json` (mode 0600, replaced atomically). Changes hold a lock on the data folder, so that
    two `cliplive token` commands at once do not lose each other's token."""

    def __init__(self, data_dir: Path):
        self.data_dir, self.path = data_dir, data_dir / TOKENS_FILE

    def read(self) -> list[Token]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputError(f"{self.path}: cannot read the tokens: {e}") from None
        try:
            tokens = [Token(**entry) for entry in data["tokens"]]
        except (KeyError, TypeError) as e:
            raise InputError(f"{self.path}: not a tokens file ({e})") from None
        for token in tokens:
            if token.role not in ROLES or not re.fullmatch(r"[0-9a-f]{64}", token.sha256):
                raise InputError(f"{self.path}: token {token.name!r} has an unknown role or a malformed hash")
        return tokens

    def add(self, role: str, name: str | None = None, secret: str | None = None) -> tuple[Token, str]:
        """A new token (and its secret, made here unless given); refused if `name` is taken."""
        check_role(role)
        if name is not None:
            check_name(name)
        secret = secret or new_secret()
        with self._locked():
            tokens = self.read()
            if name in {t.name for t in tokens}:
                raise InputError(f"a token named {name!r} exists already (cliplive token list)")
            token = Token(name or free_name(tokens, role), role, digest(secret), _now())
            self._write([*tokens, token])
        return token, secret

    def remove(self, name: str) -> Token:
        with self._locked():
            tokens = self.read()
            gone = next((t for t in tokens if t.name == name), None)
            if gone is None:
                raise InputError(f"no token named {name!r} (cliplive token list)")
            self._write([t for t in tokens if t is not gone])
        return gone

    def migrate_legacy(self) -> Token | None:
        """The plain `token` file, if any, becomes an admin token here. The plain file goes only once the new
        file is written; after a crash in between, the next start finds the same hash and just removes it."""
        secret = read_legacy_token(self.data_dir)
        if secret is None:
            return None
        with self._locked():
            tokens = self.read()
            token = next((t for t in tokens if hmac.compare_digest(t.sha256, digest(secret))), None)
            if token is None:
                token = Token(free_name(tokens, "admin"), "admin", digest(secret), _now())
                self._write([*tokens, token])
        (self.data_dir / LEGACY_TOKEN_FILE).unlink()
        return token

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        folder = os.open(self.data_dir, os.O_RDONLY)
        try:
            fcntl.flock(folder, fcntl.LOCK_EX)
            yield
        finally:
            os.close(folder)  # releases the lock

    def _write(self, tokens: list[Token]) -> None:
        """A temporary file (0600 from its creation), synced, then renamed over the old one: a reader sees
        the old file or the new one, never half of one."""
        temporary = self.path.with_name(f".{TOKENS_FILE}.{os.getpid()}.tmp")
        body = json.dumps({"tokens": [asdict(t) for t in tokens]}, indent=2) + "\n"
        temporary.unlink(missing_ok=True)  # left by a crash: made anew, so that it is 0600 from the start
        try:
            with os.fdopen(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w", encoding="utf-8") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temporary, self.path)
        finally:
            temporary.unlink(missing_ok=True)
        folder = os.open(self.data_dir, os.O_RDONLY)
        try:
            os.fsync(folder)  # the rename itself survives a crash
        finally:
            os.close(folder)


class Credentials:
    """Who presents a token: the tokens in `file`, read again when it changes (looked at once a second at
    most), and `admin_token` (the config file's `server.token`), an admin named "config". A file that
    cannot be read gives no tokens (logged) until it is fixed: refused rather than guessed at."""

    RECHECK_S = 1.0

    def __init__(self, file: TokenFile | None = None, admin_token: str | None = None):
        self.file = file
        self.fixed = [Token(CONFIG_TOKEN_NAME, "admin", digest(admin_token), "")] if admin_token else []
        self._tokens: list[Token] = []
        self._seen: tuple | None = None  # the file's (inode, size, mtime) when last read
        self._checked = -float("inf")

    def identify(self, given: str) -> Identity | None:
        wanted = digest(given)
        found = None
        for token in [*self.fixed, *self._current()]:  # all compared, in constant time: no early way out
            if hmac.compare_digest(token.sha256, wanted):
                found = token
        return Identity(found.name, found.role, found.sha256) if found else None

    def holds(self, identity: Identity) -> bool:
        """Whether the token `identity` came from is still there with the same role (not removed since)."""
        return identity.sha256 is None or any(
            token.sha256 == identity.sha256 and token.role == identity.role for token in [*self.fixed, *self._current()])

    def _current(self) -> list[Token]:
        if self.file is None or time.monotonic() - self._checked < self.RECHECK_S:
            return self._tokens
        self._checked = time.monotonic()
        try:
            stat = self.file.path.stat()
            seen = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        except FileNotFoundError:
            seen = None
        if seen != self._seen:
            self._seen, self._tokens = seen, self._read()
        return self._tokens

    def _read(self) -> list[Token]:
        try:
            return self.file.read()
        except InputError as e:
            log.error("no tokens from the tokens file: %s", e)
            return []


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")

"""The web page (server/static: plain HTML, JS and CSS, no build step), served at `/`.

Its files are public, like `/healthz`: they hold no data, and a browser loads them before it has a
token. The page asks for the token once and sends it with every API call."""

from __future__ import annotations

from pathlib import Path

from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"
PUBLIC_PATHS = ("/", *(f"/{p.name}" for p in STATIC_DIR.iterdir() if p.is_file()))


def static_files() -> StaticFiles:
    """Mount last, at "/": it answers every path no route took (404 for unknown files)."""
    return StaticFiles(directory=STATIC_DIR, html=True)

"""The web page (server/static: plain HTML, JS and CSS, no build step), served at `/`, and the API docs.

Its files are public, like `/healthz`: they hold no data, and a browser loads them before it has a
token. The page asks for the token once and sends it with every API call; it asks `GET /api/whoami` which
role the token has, and hides what a viewer token may not do (adding, editing, deleting streams, the
camera), saying "read-only (viewer token)".

The API docs (Swagger UI at `/docs`, Redoc at `/redoc`) work with no internet: their scripts and styles
are served from the `fastapi-offline` package's copy of swagger-ui-dist and redoc, never from a CDN. The
docs pages, their files, `/openapi.json` (the schema holds no secrets) and `/favicon.ico` are public too:
a followed link cannot carry the token. Opened from the page, Swagger UI takes the token from the page's
sessionStorage (same origin) and is authorized with it (`static/docs.js`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from cliplive.server.tokens import NO_AUTH

STATIC_DIR = Path(__file__).parent / "static"
DOCS_ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"
DOCS_ASSETS_URL = "/docs-assets"
DOCS_ASSETS = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js")
DOCS_PATHS = ("/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json", "/favicon.ico",
              *(f"{DOCS_ASSETS_URL}/{name}" for name in DOCS_ASSETS))
PUBLIC_PATHS = ("/", *(f"/{p.name}" for p in STATIC_DIR.iterdir() if p.is_file()), *DOCS_PATHS)
SWAGGER_PARAMETERS = {
    "persistAuthorization": True,  # the token given in "Authorize" survives a reload (browser storage)
    "validatorUrl": None,  # no badge from the online validator
    "displayRequestDuration": True,
    "tryItOutEnabled": True,
}


def add_docs(app: FastAPI) -> None:
    """`/docs`, `/redoc`, their files and `/favicon.ico`; the app is made with `docs_url=None, redoc_url=None`."""
    app.mount(DOCS_ASSETS_URL, StaticFiles(directory=DOCS_ASSETS_DIR), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        page = get_swagger_ui_html(
            openapi_url=app.openapi_url, title=f"{app.title} API", oauth2_redirect_url="/docs/oauth2-redirect",
            swagger_js_url=f"{DOCS_ASSETS_URL}/swagger-ui-bundle.js", swagger_css_url=f"{DOCS_ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url="/favicon.svg", swagger_ui_parameters=SWAGGER_PARAMETERS)
        html = page.body.decode().replace("</body>", '<script src="/docs.js"></script>\n</body>')
        return HTMLResponse(html)

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url=app.openapi_url, title=f"{app.title} API",
                              redoc_js_url=f"{DOCS_ASSETS_URL}/redoc.standalone.js", redoc_favicon_url="/favicon.svg",
                              with_google_fonts=False)

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return Response((STATIC_DIR / "favicon.svg").read_bytes(), media_type="image/svg+xml",
                        headers={"Cache-Control": "public, max-age=86400"})


class WhoAmI(BaseModel):
    name: str | None = Field(description="the token's name (as `cliplive token list` shows it); null when the server has no auth")
    role: Literal["viewer", "admin"] = Field(description="viewer: reads only; admin: everything")


def add_whoami(app: FastAPI) -> None:
    """`GET /api/whoami`: the role of the request's token (every client may be admin without auth)."""

    @app.get("/api/whoami", response_model=WhoAmI, tags=["tokens"])
    async def whoami(request: Request) -> WhoAmI:
        """The name and role of the token this request carries, for a client to offer only what its role allows."""
        identity = getattr(request.state, "token", NO_AUTH)  # set by BearerAuth
        return WhoAmI(name=identity.name, role=identity.role)


def static_files() -> StaticFiles:
    """Mount last, at "/": it answers every path no route took (404 for unknown files)."""
    return StaticFiles(directory=STATIC_DIR, html=True)

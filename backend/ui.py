"""The lab page: a browser UI for the API, served by the same FastAPI app.

    .venv/bin/python main.py serve      # then open http://127.0.0.1:8000/

GET / is one HTML page; /static/ holds its hand-written ES modules and CSS (no build
step, no CDN: it works on an offline lab machine). The page renders its form from
GET /plugin (the manifest) and talks to the JSON routes like any other client.

The page and its files are the only routes besides /health that need no bearer
token: the page has to load before it can ask the user for one.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().with_name("static")
INDEX_HTML = STATIC_DIR / "index.html"

# Everything the page needs comes from this origin; the token sits in localStorage, so
# no inline script and no third-party code may run next to it.
CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
# Revalidate on every load (ETag / Last-Modified make that a 304): after an upgrade the
# browser must not keep running last version's modules against the new API.
NO_CACHE = {"Cache-Control": "no-cache"}


def is_public(path: str) -> bool:
    """Routes the bearer token does not guard: the health probe, the page and its static files."""
    return path in ("/", "/health") or path.startswith("/static/")


class _Static(StaticFiles):
    def file_response(self, *args: object, **kwargs: object) -> Response:
        response = super().file_response(*args, **kwargs)  # type: ignore[arg-type]
        response.headers.update(NO_CACHE)
        return response


def index() -> FileResponse:
    """The lab page; its routes (#/jobs, #/jobs/ID) live after the '#', so this one URL serves them all."""
    return FileResponse(INDEX_HTML, media_type="text/html", headers={**NO_CACHE, "Content-Security-Policy": CSP})


def mount(app: FastAPI) -> None:
    app.mount("/static", _Static(directory=STATIC_DIR), name="static")
    app.add_api_route("/", index, methods=["GET", "HEAD"], include_in_schema=False, name="lab_page")

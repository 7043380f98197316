"""Serves the console's static files. They hold no data: everything the page shows comes from the /v1/learning
routes, each with its own permission (auth.py), called with the key the operator types into the page."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response

from aphrodite.endpoints.openai.errors import APIError

router = APIRouter(include_in_schema=False)

FILES = {"index.html": "text/html; charset=utf-8", "console.js": "text/javascript; charset=utf-8",
         "plot.js": "text/javascript; charset=utf-8", "console.css": "text/css; charset=utf-8"}
HEADERS = {
    # our own files only: no inline script, nothing from another origin (the page works offline)
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _file(name: str) -> Response:
    media_type = FILES.get(name)
    if media_type is None:
        raise APIError(f"The console has no file '{name[:64]}'.", 404, code="not_found")
    body = resources.files(__package__).joinpath("static", name).read_bytes()
    return Response(body, media_type=media_type, headers=HEADERS)


@router.get("/console")
async def console_page() -> Response:
    return _file("index.html")


@router.get("/console/")
async def console_slash() -> RedirectResponse:
    return RedirectResponse("/console")


@router.get("/console/static/{name}")
async def console_static(name: str) -> Response:
    return _file(name)

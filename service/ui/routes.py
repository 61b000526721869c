"""Serve the review page's static files at /ui/ and mount its helper routes (`service.ui.support`).

The page is plain ES modules, HTML and CSS under `service/ui/static/` (no build step, nothing from a
CDN). Only files in that folder are served, by exact name; the page talks to the `/v1` API only.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, RedirectResponse

from service.ui import support

STATIC_DIR = Path(__file__).resolve().parent / "static"
MEDIA_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
               ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
#: Sent with every file: the page runs only its own scripts and talks only to this origin.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; "
    "script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter()
router.include_router(support.router)


def static_files() -> dict[str, Path]:
    """The files the page may serve, by name."""
    return {p.name: p for p in STATIC_DIR.iterdir() if p.is_file() and p.suffix in MEDIA_TYPES}


@router.get("/ui", include_in_schema=False)
def ui_root() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=307)


@router.get("/ui/", include_in_schema=False)
def ui_index() -> FileResponse:
    return ui_file("index.html")


@router.get("/ui/{name}", include_in_schema=False)
def ui_file(name: str) -> FileResponse:
    path = static_files().get(name)
    if path is None:
        raise HTTPException(404, detail="no such file of the review page")
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers=SECURITY_HEADERS)

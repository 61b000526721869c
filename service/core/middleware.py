"""ASGI middleware of the API: the request body-size limit, request metrics, JSON bodies checked
for invalid text, unexpected errors answered without their message, security headers.

All are plain ASGI (no BaseHTTPMiddleware, whose task group would wrap an error raised while a
route reads the body, e.g. BodyTooLarge, into an ExceptionGroup).
"""

from __future__ import annotations

import json
import logging
import re
import time
import traceback
from pathlib import Path
from typing import Any

from fastapi.responses import JSONResponse

from service.core.errors import ServiceError

log = logging.getLogger(__name__)


class BodySizeLimit:
    """413 for bodies over the limit, by Content-Length or while streaming."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        too_large = JSONResponse(
            {"detail": f"the request body exceeds {self.max_bytes} bytes", "code": "too_large"},
            status_code=413)
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await too_large(scope, receive, send)
            return
        received = 0
        started = False

        async def limited_receive() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(f"the request body exceeds {self.max_bytes} bytes "
                                       "(MAX_UPLOAD_BYTES)")
            return message

        async def tracking_send(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except* BodyTooLarge:  # raised outside a route, or grouped by a task group
            if not started:
                await too_large(scope, receive, send)


class BodyTooLarge(ServiceError):
    """Raised inside the app when the streamed body passes the limit: a ServiceError, so a route
    reading the body answers it as 413 like any other refusal."""

    status = 413
    code = "too_large"


class ObserveRequests:
    """Time every HTTP request into `histogram` (labels: method, route template, status)."""

    def __init__(self, app: Any, histogram: Any) -> None:
        self.app, self.histogram = app, histogram

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def tracking_send(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        finally:
            template = getattr(scope.get("route"), "path", "unmatched")
            self.histogram.labels(scope["method"], template, str(status)).observe(
                time.perf_counter() - started)


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def has_lone_surrogate(value: Any) -> bool:
    """Whether a parsed JSON value holds a string with a lone UTF-16 surrogate (text that no
    database, log or password hash can encode)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(has_lone_surrogate(k) or has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_lone_surrogate(v) for v in value)
    return False


class CheckJsonBodies:
    """JSON request bodies are read whole (at most `max_bytes`, else 413) and refused with 422
    when a string in them is not valid Unicode (a lone surrogate such as \\ud800): such text
    would fail deep inside a write or a password check, as a 500 with the text in its trace."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        headers = dict(scope.get("headers") or []) if scope["type"] == "http" else {}
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if not (content_type == b"application/json" or content_type.endswith(b"+json")):
            await self.app(scope, receive, send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, receive, send)  # the client left: let the app see it
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_bytes:
                await JSONResponse({"detail": f"a JSON body may hold at most {self.max_bytes} "
                                    "bytes (MAX_JSON_BYTES)", "code": "too_large"},
                                   status_code=413)(scope, receive, send)
                return
        body = b"".join(chunks)
        if _SURROGATE_ESCAPE.search(body) and _lone_surrogate_in(body):
            await JSONResponse({"detail": "the JSON body holds text that is not valid Unicode (a "
                                "lone surrogate such as \\ud800); send UTF-8 text",
                                "code": "invalid_text"}, status_code=422)(scope, receive, send)
            return
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _lone_surrogate_in(body: bytes) -> bool:
    try:
        return has_lone_surrogate(json.loads(body))
    except ValueError:  # not JSON: the route's own validation answers it
        return False


class SafeErrors:
    """An unexpected error becomes a 500 `{"code": "internal"}` and one log line with the
    error's class and where it happened, never its message (a message can quote the request:
    a password, report text, SQL parameters)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except ServiceError:
            raise
        except Exception as error:
            frames = traceback.extract_tb(error.__traceback__)
            where = " < ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}"
                               for f in reversed(frames[-6:]))
            log.error("unexpected %s in %s %s at %s", type(error).__name__, scope.get("method"),
                      getattr(scope.get("route"), "path", "unmatched"), where)
            if not started:
                await JSONResponse({"detail": "internal error; it is logged for the operators",
                                    "code": "internal"}, status_code=500)(scope, receive, send)


#: CSP of HTML pages that set none (quality and evaluation reports: inline styles and data: images,
#: no scripts at all). The review page sets its own, stricter one.
HTML_CSP = ("default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; base-uri 'none'; "
            "form-action 'none'; frame-ancestors 'none'")


class PathCORS:
    """Starlette's CORSMiddleware for requests under `prefix` only (DICOMweb for browser viewers
    such as OHIF, DICOMWEB_CORS_ORIGINS); every other path answers as if CORS did not exist."""

    def __init__(self, app: Any, prefix: str, origins: list[str]) -> None:
        from starlette.middleware.cors import CORSMiddleware

        self.app, self.prefix = app, prefix
        self.cors = CORSMiddleware(
            app, allow_origins=origins, allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Accept", "Content-Type"],
            expose_headers=["Warning", "Content-Length"], max_age=600)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and (scope["path"] + "/").startswith(self.prefix + "/"):
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)


class SecurityHeaders:
    """Headers on every answer unless a route set its own: `Cache-Control: no-store` (tokens,
    patient data and images are kept in no cache), `X-Content-Type-Options: nosniff`, and on
    HTML a Content-Security-Policy (HTML_CSP)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                present = {name.lower() for name, _ in headers}
                content_type = dict(headers).get(b"content-type", b"")
                wanted = [(b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff")]
                if content_type.startswith(b"text/html"):
                    wanted.append((b"content-security-policy", HTML_CSP.encode()))
                headers += [(name, value) for name, value in wanted if name not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


#: Most bytes of a refused request's body read and discarded so its client sees the answer.
DRAIN_LIMIT = 64 * 1024 * 1024


class DrainBeforeRefusal:
    """When the app refuses a request (4xx) before reading its whole body, e.g. a STOW-RS upload
    without a token answered 401 at once, read and discard the rest of the body first (up to
    DRAIN_LIMIT, and only when its declared length is within it): the client, still sending,
    then reads the answer instead of a reset connection."""

    def __init__(self, app: Any, limit: int = DRAIN_LIMIT) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length", b"")
        # A client that waits for "100 Continue" has sent nothing yet: answering is enough.
        drainable = (headers.get(b"expect", b"").lower() != b"100-continue"
                     and (not length or (length.isdigit() and int(length) <= self.limit)))
        done, received = False, 0

        async def tracking_receive() -> dict:
            nonlocal done, received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                done = not message.get("more_body", False)
            else:
                done = True
            return message

        async def draining_send(message: dict) -> None:
            if (message["type"] == "http.response.start" and 400 <= message["status"] < 500
                    and drainable):
                while not done and received <= self.limit:
                    await tracking_receive()
            await send(message)

        await self.app(scope, tracking_receive, draining_send)

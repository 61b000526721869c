"""ASGI middleware of the API: the request body-size limit, request metrics.

All are plain ASGI (no BaseHTTPMiddleware, whose task group would wrap an error raised while a
route reads the body, e.g. BodyTooLarge, into an ExceptionGroup).
"""

from __future__ import annotations

import time
from typing import Any

from fastapi.responses import JSONResponse

from service.core.errors import ServiceError


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

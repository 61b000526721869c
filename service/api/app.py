"""The FastAPI application: routers, body-size limit, error bodies, request metrics, the reconciler."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from service import intake
from service.config import Settings, get_settings

log = logging.getLogger("service.api")


class BodySizeLimit:
    """ASGI middleware: 413 for bodies over the limit, by Content-Length or while streaming."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        too_large = JSONResponse({"detail": f"the request body exceeds {self.max_bytes} bytes", "code": "too_large"},
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
                    raise _TooLarge
            return message

        async def tracking_send(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await too_large(scope, receive, send)


class _TooLarge(Exception):
    pass


def create_app(settings: Settings | None = None, *, run_reconciler: bool = True) -> FastAPI:
    """The API; `settings` default to the environment. Migrations are the caller's job (`serve` runs them)."""
    from service.api import dicomweb, ops, studies
    from service.metrics import build_registry

    settings = settings or get_settings()
    settings.ensure_dirs()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = None
        if run_reconciler and settings.reconcile_interval_s > 0:
            task = asyncio.create_task(_reconcile_forever(settings))
        yield
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    app = FastAPI(
        title="radreport",
        version="1.0",
        summary="Chest X-ray draft reports: DICOM in (upload or STOW-RS), drafts out.",
        description="Bearer tokens are API keys from `radreport admin create-key`; each endpoint names its "
        "roles (`x-roles`). Studies move received -> ingested -> generating -> draft_ready, or failed with a reason.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.registry, request_seconds = build_registry(settings)
    app.include_router(studies.router)
    app.include_router(dicomweb.router)
    app.include_router(ops.router)
    from service.api import accounts, evaluations, quality, review  # review workflow (issue 7)

    app.include_router(accounts.router)
    app.include_router(review.router)
    app.include_router(quality.router)
    app.include_router(evaluations.router)
    app.include_router(__import__("service.ui.routes", fromlist=["router"]).router)  # review page /ui/ (issue 8)

    @app.exception_handler(intake.UploadError)
    async def upload_error(_: Request, error: intake.UploadError) -> JSONResponse:
        return JSONResponse({"detail": error.message, "code": error.code}, status_code=error.status_code)

    @app.middleware("http")
    async def observe(request: Request, call_next: Any) -> Any:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        template = getattr(route, "path", "unmatched")
        request_seconds.labels(request.method, template, str(response.status_code)).observe(time.perf_counter() - started)
        return response

    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes)
    return app


async def _reconcile_forever(settings: Settings) -> None:
    from service.tasks import reconcile

    while True:
        await asyncio.sleep(settings.reconcile_interval_s)
        try:
            await run_in_threadpool(reconcile, settings)
        except Exception as error:
            log.warning("reconciler pass failed (%s)", type(error).__name__)

"""The FastAPI application: every domain's routers, the error bodies, the body-size limit, request
metrics, and the reconciler loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool

from service.auth import routes as auth_routes
from service.core import errors
from service.core.config import Settings, get_settings
from service.core.middleware import BodySizeLimit
from service.dicomweb import outbox, read_routes
from service.dicomweb import routes as dicomweb_routes
from service.ops import routes as ops_routes
from service.ops.metrics import build_registry
from service.quality import evaluation_routes
from service.quality import routes as quality_routes
from service.review import routes as review_routes
from service.studies import routes as studies_routes
from service.studies.reconcile import reconcile
from service.ui import routes as ui_routes

log = logging.getLogger(__name__)

#: Every router, in the order their routes are matched.
ROUTERS = (studies_routes.router, dicomweb_routes.router, read_routes.router, ops_routes.router,
           auth_routes.router, review_routes.router, quality_routes.router,
           evaluation_routes.router, ui_routes.router)


def create_app(settings: Settings | None = None, *, run_reconciler: bool = True) -> FastAPI:
    """The API; `settings` default to the environment. Migrations are the caller's job (`serve`
    runs them)."""
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
    for router in ROUTERS:
        app.include_router(router)

    errors.install(app)

    @app.middleware("http")
    async def observe(request: Request, call_next: Any) -> Any:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        template = getattr(route, "path", "unmatched")
        request_seconds.labels(request.method, template, str(response.status_code)).observe(
            time.perf_counter() - started)
        return response

    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes)
    return app


async def _reconcile_forever(settings: Settings) -> None:
    while True:
        await asyncio.sleep(settings.reconcile_interval_s)
        # Lost pipeline work, then PACS deliveries that are due (retries after their backoff).
        for step in (reconcile, outbox.resend_due):
            try:
                await run_in_threadpool(step, settings)
            except Exception as error:
                log.warning("reconciler pass failed (%s)", type(error).__name__)

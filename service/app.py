"""The FastAPI application: every domain's routers, the error bodies, the body-size limit, request
metrics, and the reconciler loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from service.auth import routes as auth_routes
from service.core import errors, spool
from service.core.config import Settings, get_settings
from service.core.limits import RateLimit, Slots
from service.core.middleware import (
    BodySizeLimit,
    CheckJsonBodies,
    DrainBeforeRefusal,
    ObserveRequests,
    PathCORS,
    SafeErrors,
    SecurityHeaders,
)
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
    spool.sweep(settings.storage_dir)

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
        description="Bearer tokens are API keys from `radreport admin create-key`; each endpoint "
        "names its roles (`x-roles`). Studies move received -> ingested -> generating -> "
        "draft_ready, or failed with a reason.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.registry, request_seconds = build_registry(settings)
    app.state.upload_slots = Slots(settings.max_concurrent_uploads,
                                   settings.max_concurrent_uploads_per_key, what="uploads",
                                   retry_after_s=5)
    app.state.auth_attempts = RateLimit(settings.auth_attempts_per_minute, 60.0,
                                        what="password attempts")
    for router in ROUTERS:
        app.include_router(router)

    errors.install(app)

    # Innermost first: SafeErrors inside the metrics (a 500 is counted), the size limit outside.
    app.add_middleware(SafeErrors)
    app.add_middleware(CheckJsonBodies, max_bytes=settings.max_json_bytes)
    app.add_middleware(ObserveRequests, histogram=request_seconds)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes)
    origins = [o.strip() for o in settings.dicomweb_cors_origins.split(",") if o.strip()]
    if origins:  # refusals too carry CORS headers, so a browser viewer can read them
        app.add_middleware(PathCORS, prefix="/dicomweb", origins=origins)
    app.add_middleware(DrainBeforeRefusal)  # outermost: the client reads every refusal
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

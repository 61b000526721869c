"""Request dependencies every route may use: the settings, a database session, the store, ids."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Path, Request
from sqlalchemy.orm import Session

from service.core.config import Settings
from service.core.db import session_scope
from service.core.errors import ServiceError
from service.core.storage import BlobStore


def get_settings_dep(request: Request) -> Settings:
    """The app's settings."""
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    """A session per request: committed when the handler returns, rolled back on error (except
    what an error with `keep_changes` asks to keep, e.g. the audit event of a wrong password)."""
    with session_scope(request.app.state.settings.database_url) as session:
        try:
            yield session
        except ServiceError as error:
            if error.keep_changes:
                session.commit()
            raise


def get_store(request: Request) -> BlobStore:
    """The content-addressed file store."""
    return BlobStore(request.app.state.settings.storage_dir)


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
# scope="function": commit before the response is sent, so the next request sees the change.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
StoreDep = Annotated[BlobStore, Depends(get_store)]
#: A report id in a path (`/v1/reports/{report_id}`, `/v1/quality/reports/{report_id}`).
ReportId = Annotated[str, Path(min_length=1, max_length=36, pattern=r"^[0-9A-Za-z-]+$",
                               description="Report id.")]

"""Request dependencies: settings, the database session, the file store and role-checked users."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from service.config import Settings
from service.db import session_scope
from service.models import Role, User
from service.security import AuthError, authenticate
from service.storage import BlobStore

bearer = HTTPBearer(auto_error=False, description="An API key from `radreport admin create-key`.")


def get_settings_dep(request: Request) -> Settings:
    """The app's settings."""
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    """A session per request: committed when the handler returns, rolled back on error."""
    with session_scope(request.app.state.settings.database_url) as session:
        yield session


def get_store(request: Request) -> BlobStore:
    """The content-addressed file store."""
    return BlobStore(request.app.state.settings.storage_dir)


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
# scope="function": commit before the response is sent, so the next request sees the change.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
StoreDep = Annotated[BlobStore, Depends(get_store)]


def require(*roles: Role) -> Callable[..., User]:
    """A dependency admitting exactly `roles`: 401 without a valid token, 403 for another role."""
    allowed = frozenset(roles)

    def dependency(
        session: SessionDep,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> User:
        try:
            user = authenticate(session, credentials.credentials if credentials else None)
        except AuthError as error:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED, detail=str(error), headers={"WWW-Authenticate": "Bearer"}
            ) from None
        if user.role not in allowed:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                detail=f"role {user.role.value} may not do this; allowed: {', '.join(sorted(r.value for r in allowed))}",
            )
        return user

    dependency.roles = allowed  # type: ignore[attr-defined]
    return dependency


def roles_doc(*roles: Role) -> dict[str, Any]:
    """OpenAPI extras naming the roles of an endpoint."""
    return {"x-roles": sorted(r.value for r in roles)}


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing, unknown or revoked bearer token"},
    403: {"description": "The token's role may not use this endpoint"},
}

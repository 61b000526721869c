"""The current user as a dependency: `require(*roles)` admits just those roles; role docs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.auth.bearer import authenticate
from service.auth.users import hash_token
from service.core.deps import SessionDep
from service.core.models import Role, User

bearer = HTTPBearer(auto_error=False, description="An API key from `radreport admin create-key`.")


def require(*roles: Role) -> Callable[..., User]:
    """A dependency admitting exactly `roles`: 401 without a valid token (AuthError), 403 for
    another role."""
    allowed = frozenset(roles)

    def dependency(
        session: SessionDep,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> User:
        user = authenticate(session, credentials.credentials if credentials else None)
        if user.role not in allowed:
            names = ", ".join(sorted(r.value for r in allowed))
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                detail=f"role {user.role.value} may not do this; allowed: {names}",
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


def password_attempt(request: Request) -> None:
    """Count one password attempt (sign-in, re-authentication) against the client's address and,
    when it sends one, its token: AUTH_ATTEMPTS_PER_MINUTE each, else 429 with Retry-After."""
    keys = [f"address:{request.client.host if request.client else '-'}"]
    authorization = request.headers.get("authorization", "")
    if authorization:
        keys.append(f"token:{hash_token(authorization)}")
    request.app.state.auth_attempts.hit(*keys)


#: A route parameter that counts a password attempt before the route runs.
PasswordAttempt = Annotated[None, Depends(password_attempt)]

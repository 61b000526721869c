"""Routes for people signing in and out: POST /v1/login, POST /v1/logout, GET /v1/me."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Response
from fastapi.security import HTTPAuthorizationCredentials, OAuth2PasswordRequestForm
from pydantic import BaseModel, Field

from service.auth import accounts
from service.auth.deps import ERRORS, PasswordAttempt, bearer, require, roles_doc
from service.core.deps import SessionDep, SettingsDep
from service.core.errors import Problem
from service.core.models import Role, User

router = APIRouter(prefix="/v1", tags=["accounts"])

EVERYONE = (Role.uploader, Role.radiologist, Role.admin)
#: The bearer token of the request, if any (sign-out and "who am I" tell the two kinds apart).
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


class LoginResponse(BaseModel):
    """A sign-in token (OAuth2 password flow shape) and when it stops working."""

    access_token: str = Field(description="Send as `Authorization: Bearer <token>`; shown once.")
    token_type: str = "bearer"
    expires_in: int = Field(description="Seconds until the token expires at the latest.")
    expires_at: dt.datetime
    idle_timeout_s: int = Field(
        description="The token also expires after this long without a request.")
    user: str
    role: str


class Me(BaseModel):
    """Who the bearer token belongs to."""

    user: str
    role: str
    token: str = Field(description="`sign-in` (from POST /v1/login) or `api-key`.")
    has_password: bool = Field(
        description="Whether the account can sign reports (signing re-asks the password).")


@router.post(
    "/login",
    response_model=LoginResponse,
    summary="Sign in with user name and password; returns a short-lived bearer token",
    description="No token needed. Form fields `username` and `password` (OAuth2 password flow). "
    "The token expires after LOGIN_TTL_S or after LOGIN_IDLE_S without use; POST /v1/logout "
    "revokes it. Machines use API keys instead. Failed attempts are audited; after "
    "LOGIN_MAX_FAILURES within LOGIN_LOCKOUT_S the name is refused (429). A hospital identity "
    "provider (OIDC) is described in docs/review.md.",
    responses={401: {"model": Problem, "description": "Unknown user or wrong password"},
               429: {"model": Problem, "description": "Too many failed sign-ins for this name "
                     "(LOGIN_MAX_FAILURES), or too many attempts from this client "
                     "(AUTH_ATTEMPTS_PER_MINUTE)"},
               503: {"model": Problem, "description": "Too many password checks at once"}},
)
def login(_: PasswordAttempt, form: Annotated[OAuth2PasswordRequestForm, Depends()],
          session: SessionDep, settings: SettingsDep) -> LoginResponse:
    token, row = accounts.login(session, form.username, form.password,
                                ttl_s=settings.login_ttl_s, idle_s=settings.login_idle_s,
                                max_failures=settings.login_max_failures,
                                lockout_s=settings.login_lockout_s)
    return LoginResponse(access_token=token, expires_in=settings.login_ttl_s,
                         expires_at=row.expires_at, idle_timeout_s=row.idle_s,
                         user=row.user.name, role=row.user.role.value)


@router.post(
    "/logout",
    status_code=204,
    response_class=Response,
    summary="Sign out: revoke this sign-in token",
    description="Roles: uploader, radiologist, admin. Only sign-in tokens can be signed out (409 "
    "for an API key: an administrator revokes those with `radreport admin revoke-keys`).",
    openapi_extra=roles_doc(*EVERYONE),
    responses={**ERRORS, 409: {"model": Problem}},
)
def logout(session: SessionDep, user: Annotated[User, Depends(require(*EVERYONE))],
           credentials: Credentials) -> Response:
    if credentials is None or not accounts.logout(session, credentials.credentials, user):
        raise HTTPException(409, detail="this is an API key, not a sign-in token; an administrator "
                            "revokes API keys with `radreport admin revoke-keys`")
    return Response(status_code=204)


@router.get(
    "/me",
    response_model=Me,
    summary="Who am I: the user and role of this token",
    description="Roles: uploader, radiologist, admin.",
    openapi_extra=roles_doc(*EVERYONE),
    responses=ERRORS,
)
def me(user: Annotated[User, Depends(require(*EVERYONE))], credentials: Credentials) -> Me:
    token = credentials.credentials if credentials else ""
    signed_in = token.startswith(accounts.LOGIN_PREFIX)
    return Me(user=user.name, role=user.role.value, token="sign-in" if signed_in else "api-key",
              has_password=bool(user.password_hash))

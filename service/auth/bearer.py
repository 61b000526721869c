"""Who a bearer token belongs to: a person's sign-in token (`rrs_`) or a machine's key (`rr_`)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from service.auth.accounts import LOGIN_PREFIX, authenticate_login
from service.auth.api_keys import authenticate_api_key
from service.auth.users import AuthError
from service.core.models import User


def authenticate(session: Session, token: str | None) -> User:
    """The active user owning `token`; raises AuthError otherwise (never logs the token)."""
    if not token:
        raise AuthError("missing bearer token")
    if token.startswith(LOGIN_PREFIX):
        return authenticate_login(session, token)
    return authenticate_api_key(session, token)

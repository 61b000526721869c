"""API keys and roles: random bearer tokens stored as SHA-256, users with one role each."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.models import ApiKey, AuditEvent, Role, User, utcnow

TOKEN_PREFIX = "rr_"


class AuthError(Exception):
    """A request's credentials are absent, unknown or revoked."""


def hash_token(token: str) -> str:
    """SHA-256 of a token: 256 bits of randomness need no slow hash, and lookup stays O(1)."""
    return hashlib.sha256(token.encode()).hexdigest()


class RoleConflict(ValueError):
    """A user name already exists with another role (a user keeps one role)."""


def get_or_create_user(session: Session, *, name: str, role: Role, actor: str) -> User:
    """The user called `name`, created with `role` (and audited) when absent.

    Raises RoleConflict when the name already belongs to a user of another role.
    """
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        user = User(name=name, role=role)
        session.add(user)
        session.flush()
        session.add(AuditEvent(actor=actor, action="user.create", details={"user": name, "role": role.value}))
    elif user.role != role:
        raise RoleConflict(f"user {name!r} already exists with role {user.role.value}, not {role.value}")
    return user


def create_api_key(session: Session, *, name: str, role: Role, actor: str = "cli:admin") -> str:
    """Create (or reuse) user `name` with `role` and a new API key for it; returns the token once.

    A user keeps one role: asking for another role for an existing name is an error.
    """
    user = get_or_create_user(session, name=name, role=role, actor=actor)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(user_id=user.id, prefix=token[:10], token_sha256=hash_token(token))
    session.add(key)
    session.flush()
    session.add(
        AuditEvent(actor=actor, action="api_key.create", details={"user": name, "key_id": key.id, "prefix": key.prefix})
    )
    return token


def revoke_api_keys(session: Session, *, name: str, actor: str = "cli:admin") -> int:
    """Revoke every active key of user `name`; returns how many were revoked."""
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        raise ValueError(f"no user named {name!r}")
    count = 0
    for key in user.api_keys:
        if key.revoked_at is None:
            key.revoked_at = utcnow()
            count += 1
    session.add(AuditEvent(actor=actor, action="api_key.revoke", details={"user": name, "count": count}))
    return count


def authenticate(session: Session, token: str | None) -> User:
    """The active user owning `token`; raises AuthError otherwise (never logs the token)."""
    if not token:
        raise AuthError("missing bearer token")
    if token.startswith("rrs_"):  # a sign-in token of a person (POST /v1/login), see service.accounts
        from service.accounts import authenticate_login

        return authenticate_login(session, token)
    key = session.scalar(select(ApiKey).where(ApiKey.token_sha256 == hash_token(token)))
    if key is None or key.revoked_at is not None or not key.user.active:
        raise AuthError("invalid or revoked token")
    return key.user

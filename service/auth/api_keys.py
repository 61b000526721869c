"""API keys of machines (a PACS, an integration engine): random bearer tokens stored as SHA-256."""

from __future__ import annotations

import datetime as dt
import secrets

from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from service.auth.users import AuthError, get_or_create_user, hash_token
from service.core.models import ApiKey, AuditEvent, Role, User, utcnow

TOKEN_PREFIX = "rr_"


def create_api_key(session: Session, *, name: str, role: Role, actor: str = "cli:admin",
                   expires_days: float | None = None) -> str:
    """Create (or reuse) user `name` with `role` and a new API key for it; returns the token once.

    A user keeps one role: asking for another role for an existing name is an error. With
    `expires_days` the key stops working that many days from now.
    """
    if expires_days is not None and expires_days <= 0:
        raise ValueError("expires_days must be positive")
    user = get_or_create_user(session, name=name, role=role, actor=actor)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires_at = utcnow() + dt.timedelta(days=expires_days) if expires_days is not None else None
    key = ApiKey(user_id=user.id, prefix=token[:10], token_sha256=hash_token(token),
                 expires_at=expires_at)
    session.add(key)
    session.flush()
    session.add(
        AuditEvent(actor=actor, action="api_key.create",
                   details={"user": name, "key_id": key.id, "prefix": key.prefix,
                            "expires_at": expires_at.isoformat() if expires_at else None})
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
    session.add(AuditEvent(actor=actor, action="api_key.revoke",
                           details={"user": name, "count": count}))
    return count


def authenticate_api_key(session: Session, token: str) -> User:
    """The active user owning API key `token`; raises AuthError otherwise (never logs the token)."""
    key = session.scalar(select(ApiKey).where(ApiKey.token_sha256 == hash_token(token)))
    if key is None or key.revoked_at is not None or not key.user.active:
        raise AuthError("invalid or revoked token")
    now = utcnow()
    if key.expires_at is not None and now >= key.expires_at:
        raise AuthError("this API key has expired; ask an administrator for a new one "
                        "(`radreport admin create-key`)")
    if key.last_used_at is None or now - key.last_used_at > dt.timedelta(seconds=60):
        _touch(session, key.id, now)
    return key.user


def _touch(session: Session, key_id: int, now: dt.datetime) -> None:
    """Record a key's use in its own short transaction (at most once a minute per key): the
    request's session may write for long (an upload), and SQLite has one writer at a time.
    Best effort: a busy database skips the update rather than the request."""
    try:
        with session.get_bind().begin() as connection:
            connection.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=now))
    except OperationalError:
        return


def describe_api_keys(session: Session) -> list[tuple[str, ...]]:
    """Every API key as text columns (user, role, prefix, created, expires, last used, revoked;
    '-' for none): what an administrator reviews to find unused or forgotten keys."""
    def when(value: dt.datetime | None) -> str:
        return value.isoformat(timespec="seconds") if value is not None else "-"

    keys = session.scalars(select(ApiKey).order_by(ApiKey.id))
    return [(key.user.name, key.user.role.value, key.prefix, when(key.created_at),
             when(key.expires_at), when(key.last_used_at), when(key.revoked_at)) for key in keys]

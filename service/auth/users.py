"""Users (a person or a machine, one role each) and what every credential shares: token hashing and
`AuthError`."""

from __future__ import annotations

import hashlib

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.core.errors import ServiceError
from service.core.models import AuditEvent, Role, User


class AuthError(ServiceError):
    """A request's credentials are absent, unknown or revoked (401, asking for a bearer token)."""

    status = 401

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class RoleConflict(ValueError):
    """A user name already exists with another role (a user keeps one role)."""


def hash_token(token: str) -> str:
    """SHA-256 of a token: 256 bits of randomness need no slow hash, and lookup stays O(1)."""
    return hashlib.sha256(token.encode()).hexdigest()


def get_or_create_user(session: Session, *, name: str, role: Role, actor: str) -> User:
    """The user called `name`, created with `role` (and audited) when absent.

    Raises RoleConflict when the name already belongs to a user of another role.
    """
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        user = User(name=name, role=role)
        session.add(user)
        session.flush()
        session.add(AuditEvent(actor=actor, action="user.create",
                               details={"user": name, "role": role.value}))
    elif user.role != role:
        raise RoleConflict(
            f"user {name!r} already exists with role {user.role.value}, not {role.value}")
    return user

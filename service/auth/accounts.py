"""People's accounts: argon2 password hashes, short-lived sign-in tokens, sign-out, re-auth.

Machines (a PACS, an integration engine) keep API keys (`service.auth.api_keys`); people sign in
with a password at `POST /v1/login` and get a bearer token that expires after `LOGIN_TTL_S` or after
`LOGIN_IDLE_S` without use (HIPAA 164.312(a)(2)(iii) automatic logoff), and that sign-out revokes.
Both kinds of token travel in the same `Authorization: Bearer` header; sign-in tokens start with
`rrs_`, API keys with `rr_`. A hospital that runs its own identity provider puts an OIDC-aware
proxy or the `OIDC` variant described in docs/review.md in front; passwords then stay with the IdP.

Every function takes the session explicitly and commits nothing.
"""

from __future__ import annotations

import datetime as dt
import functools
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from service.auth.users import AuthError, RoleConflict, get_or_create_user, hash_token
from service.core.config import Settings, get_settings
from service.core.limits import Gate
from service.core.models import AuditEvent, LoginToken, Role, User, utcnow

LOGIN_PREFIX = "rrs_"
MIN_PASSWORD_LENGTH = 12


class AccountError(ValueError):
    """An account cannot be created or changed as asked (the message says why)."""


class CredentialError(AuthError):
    """A user name and password do not match an active account (deliberately vague); the failed
    attempt's audit event is kept (it counts toward the lockout)."""

    keep_changes = True


class TooManyFailures(AuthError):
    """Too many failed sign-ins for this user name lately; refused until the window passes."""

    status = 429

    def __init__(self, retry_after_s: int) -> None:
        minutes = retry_after_s // 60 + 1
        super().__init__(f"too many failed sign-ins for this user name; try again in {minutes} "
                         "minutes or ask an administrator")
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


@functools.cache
def _hasher() -> PasswordHasher:
    # argon2id with the library's RFC 9106 "low memory" defaults (t=3, m=64 MiB, p=4).
    return PasswordHasher()


@functools.cache
def password_gate() -> Gate:
    """The process's gate around argon2 (PASSWORD_CHECKS at once, 64 MiB each): concurrent
    sign-in attempts wait their turn (503 after 10 s) instead of exhausting memory."""
    return Gate(get_settings().password_checks, wait_s=10.0, what="password checks")


def hash_password(password: str) -> str:
    """An argon2id hash of `password` (salted; the parameters are stored in the hash)."""
    with password_gate().enter():
        return _hasher().hash(password)


@dataclass(frozen=True)
class Lockout:
    """How many failed password checks of one account (sign-ins and re-authentications at
    signing together) within `window_s` lock it: LOGIN_MAX_FAILURES, LOGIN_LOCKOUT_S."""

    max_failures: int
    window_s: int

    @classmethod
    def of(cls, settings: Settings) -> Lockout:
        """The lockout the settings describe."""
        return cls(settings.login_max_failures, settings.login_lockout_s)


def check_password_strength(password: str) -> None:
    """Refuse passwords too short to resist guessing (NIST SP 800-63B: length over composition)."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")


def create_user(session: Session, *, name: str, role: Role, password: str,
                actor: str = "cli:admin") -> User:
    """Create a person's account with a password, or set the password of an existing such user."""
    check_password_strength(password)
    try:
        user = get_or_create_user(session, name=name, role=role, actor=actor)
    except RoleConflict as error:
        raise AccountError(str(error)) from error
    user.password_hash = hash_password(password)
    session.add(AuditEvent(actor=actor, action="user.set_password", user_id=None,
                           details={"user": name}))
    return user


def verify_password(session: Session, user: User, password: str) -> bool:
    """Whether `password` is the user's; rehashes transparently when argon2's parameters changed."""
    if not user.password_hash:
        return False
    try:
        with password_gate().enter():
            _hasher().verify(user.password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
    if _hasher().check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    return True


#: The audit action of a wrong password re-entered at signing or amending.
REAUTH_FAILURE = "report.sign_reauth_failure"


def recent_failures(session: Session, name: str, window_s: int) -> list[dt.datetime]:
    """Times of the failed password checks of user name `name` in the last `window_s` seconds
    (from the audit trail): failed sign-ins and failed re-authentications at signing."""
    since = utcnow() - dt.timedelta(seconds=window_s)
    user_id = None if "\x00" in name else session.scalar(select(User.id).where(User.name == name))
    whose = AuditEvent.actor == f"user:{name}"[:200]
    if user_id is not None:
        whose = or_(whose, and_(AuditEvent.action == REAUTH_FAILURE, AuditEvent.user_id == user_id))
    return list(session.scalars(select(AuditEvent.at).where(
        AuditEvent.action.in_(("login.failure", REAUTH_FAILURE)), whose, AuditEvent.at >= since,
    ).order_by(AuditEvent.at)))


def check_lockout(session: Session, name: str, lockout: Lockout) -> None:
    """TooManyFailures when `name` failed `lockout.max_failures` password checks within the
    window (the password is then not checked at all, which caps online guessing)."""
    failures = recent_failures(session, name, lockout.window_s)
    if len(failures) >= lockout.max_failures:
        retry = failures[-lockout.max_failures] + dt.timedelta(seconds=lockout.window_s) - utcnow()
        raise TooManyFailures(max(int(retry.total_seconds()), 1))


def reauthenticate(session: Session, user: User, password: str, lockout: Lockout) -> bool:
    """Whether `password` is the signed-in user's own (re-authentication at signing), under the
    same lockout as sign-in: TooManyFailures when the account is locked. The caller audits a
    failure (REAUTH_FAILURE), then calls `lock_after_failure`."""
    check_lockout(session, user.name, lockout)
    return verify_password(session, user, password)


def lock_after_failure(session: Session, user: User, lockout: Lockout) -> bool:
    """After a failed re-authentication (already added to the session): when the account has
    now reached the lockout, sign it out everywhere (a stolen session cannot go on guessing)
    and return True."""
    session.flush()
    if len(recent_failures(session, user.name, lockout.window_s)) < lockout.max_failures:
        return False
    revoke_logins(session, name=user.name, actor="system:lockout")
    return True


def check_credentials(session: Session, name: str, password: str, *,
                      max_failures: int | None = None, lockout_s: int = 900) -> User:
    """The active user `name` if `password` matches; CredentialError otherwise (failure audited).

    With `max_failures`, a name that failed that often within `lockout_s` is refused without
    checking the password (TooManyFailures), which caps online guessing.
    """
    if max_failures is not None:
        check_lockout(session, name, Lockout(max_failures, lockout_s))
    user = None if "\x00" in name else session.scalar(select(User).where(User.name == name))
    if user is None:
        # Spend the same time as a real check: no user enumeration by timing.
        hash_password(password)
    elif user.active and verify_password(session, user, password):
        return user
    session.add(AuditEvent(actor=f"user:{name}"[:200], user_id=user.id if user else None,
                           action="login.failure", details={"user_known": user is not None}))
    raise CredentialError("unknown user name or wrong password")


def login(session: Session, name: str, password: str, *, ttl_s: int, idle_s: int,
          max_failures: int | None = None, lockout_s: int = 900) -> tuple[str, LoginToken]:
    """Check the password and issue a sign-in token: (token shown once, its row)."""
    user = check_credentials(session, name, password, max_failures=max_failures,
                             lockout_s=lockout_s)
    token = LOGIN_PREFIX + secrets.token_urlsafe(32)
    now = utcnow()
    row = LoginToken(user_id=user.id, token_sha256=hash_token(token), created_at=now,
                     expires_at=now + dt.timedelta(seconds=ttl_s), idle_s=idle_s, last_seen=now)
    session.add(row)
    session.flush()
    details = {"login_token_id": row.id, "expires_at": row.expires_at.isoformat()}
    session.add(AuditEvent(actor=user.name, user_id=user.id, action="login.success",
                           details=details))
    return token, row


def _token_row(session: Session, token: str) -> LoginToken | None:
    return session.scalar(select(LoginToken).where(LoginToken.token_sha256 == hash_token(token)))


def authenticate_login(session: Session, token: str) -> User:
    """The active user of a live sign-in token (not expired, not idle too long, not revoked)."""
    row = _token_row(session, token)
    now = utcnow()
    if row is None or row.revoked_at is not None:
        raise AuthError("invalid or signed-out token; sign in again at POST /v1/login")
    if now >= row.expires_at or now >= row.last_seen + dt.timedelta(seconds=row.idle_s):
        raise AuthError("the sign-in has expired; sign in again at POST /v1/login")
    if not row.user.active:
        raise AuthError("this account is disabled")
    # Touch at most every 10 s, so a busy client does not write on every request.
    if now - row.last_seen > dt.timedelta(seconds=10):
        session.execute(update(LoginToken).where(LoginToken.id == row.id).values(last_seen=now)
                        .execution_options(synchronize_session=False))
    return row.user


def logout(session: Session, token: str, user: User) -> bool:
    """Revoke the sign-in token `token`; False for any other token (admins revoke API keys)."""
    if not token.startswith(LOGIN_PREFIX):
        return False
    row = _token_row(session, token)
    if row is None or row.user_id != user.id:
        return False
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.add(AuditEvent(actor=user.name, user_id=user.id, action="logout",
                               details={"login_token_id": row.id}))
    return True


def revoke_logins(session: Session, *, name: str, actor: str = "cli:admin") -> int:
    """Sign a user out everywhere (every live sign-in token revoked); returns how many."""
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        raise AccountError(f"no user named {name!r}")
    live = select(LoginToken).where(LoginToken.user_id == user.id, LoginToken.revoked_at.is_(None))
    rows = session.scalars(live)
    count = 0
    for row in rows:
        row.revoked_at = utcnow()
        count += 1
    session.add(AuditEvent(actor=actor, action="login.revoke_all",
                           details={"user": name, "count": count}))
    return count


def set_active(session: Session, *, name: str, active: bool, actor: str = "cli:admin") -> None:
    """Enable or disable an account (a disabled account's keys and sign-ins stop at once)."""
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        raise AccountError(f"no user named {name!r}")
    user.active = active
    action = "user.enable" if active else "user.disable"
    session.add(AuditEvent(actor=actor, action=action, details={"user": name}))

"""Console sessions: a random cookie token, of which only a SHA-256 is stored, with its CSRF token.

A session ends after SESSION_LIFETIME, or IDLE_TIMEOUT without a request. Until a second factor
is given (factor_at) it is only half open: it reaches the second-factor and first-enrolment
pages and nothing else, and lasts at most PENDING_LIFETIME. Ending a staff member's sessions
signs them out everywhere at once.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, delete

from mailing.models import Staff, StaffSession, utcnow
from mailing.staff.passwords import hash_token

SESSION_LIFETIME = timedelta(hours=8)
IDLE_TIMEOUT = timedelta(minutes=30)
PENDING_LIFETIME = timedelta(minutes=10)
# Dangerous actions need a second factor given this recently.
RECENT_FACTOR = timedelta(minutes=10)
# Recording every request would write on every page; a minute is precise enough for 30 minutes.
SEEN_PRECISION = timedelta(minutes=1)


@dataclass(frozen=True)
class SignedIn:
    staff: Staff
    csrf_token: str
    session_key: str  # the stored hash of the cookie token
    factor_at: datetime | None

    @property
    def complete(self) -> bool:
        return self.factor_at is not None

    def factor_is_recent(self, now: datetime | None = None) -> bool:
        return self.factor_at is not None and (now or utcnow()) - self.factor_at < RECENT_FACTOR


def aware(when: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes even though we store UTC.
    if when is not None and when.tzinfo is None:
        return when.replace(tzinfo=UTC)
    return when


def start_session(session: Session, staff: Staff, *, with_factor: bool = False) -> str:
    """A new session, half-open unless `with_factor`; returns the cookie token."""
    purge_expired_sessions(session)
    token = secrets.token_urlsafe(32)
    now = utcnow()
    session.add(
        StaffSession(
            token_hash=hash_token(token),
            staff_id=staff.id or 0,
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            expires_at=now + SESSION_LIFETIME,
            last_seen_at=now,
            factor_at=now if with_factor else None,
        )
    )
    session.commit()
    return token


def complete_session(session: Session, who: SignedIn) -> str:
    """The second factor is given: the half-open session is replaced by a full one with a new
    token, so a token seen before the second factor (a fixed or leaked cookie) is worth nothing."""
    session.exec(delete(StaffSession).where(col(StaffSession.token_hash) == who.session_key))
    return start_session(session, who.staff, with_factor=True)


def signed_in(session: Session, token: str | None, *, pending: bool = False) -> SignedIn | None:
    """The staff member behind a session cookie, or None if it is unknown, expired, idle too
    long or revoked. A half-open session counts only when `pending` is asked for."""
    if not token or len(token) > 200:
        return None
    row = session.get(StaffSession, hash_token(token))
    if row is None:
        return None
    now = utcnow()
    expires = aware(row.expires_at) or now
    seen = aware(row.last_seen_at) or aware(row.created_at) or now
    factor_at = aware(row.factor_at)
    created = aware(row.created_at) or now
    if (
        expires <= now
        or now - seen >= IDLE_TIMEOUT
        or (factor_at is None and now - created >= PENDING_LIFETIME)
    ):
        session.delete(row)
        session.commit()
        return None
    if factor_at is None and not pending:
        return None
    staff = session.get(Staff, row.staff_id)
    if staff is None or staff.disabled_at is not None:
        return None
    if now - seen >= SEEN_PRECISION:
        _update(session, row.token_hash, last_seen_at=now)
    return SignedIn(staff, row.csrf_token, row.token_hash, factor_at)


def factor_given(session: Session, who: SignedIn) -> SignedIn:
    """Record that a second factor was just given in this session (sign-in or re-check)."""
    now = utcnow()
    _update(session, who.session_key, factor_at=now, last_seen_at=now, challenge=None)
    return SignedIn(who.staff, who.csrf_token, who.session_key, now)


def set_challenge(session: Session, who: SignedIn, challenge: str) -> None:
    _update(session, who.session_key, challenge=challenge)


def take_challenge(session: Session, who: SignedIn) -> str | None:
    """The pending WebAuthn challenge, cleared as it is read so it can be answered only once."""
    row = session.get(StaffSession, who.session_key)
    challenge = row.challenge if row else None
    if challenge:
        _update(session, who.session_key, challenge=None)
    return challenge


def _update(session: Session, key: str, **values: object) -> None:
    session.execute(
        sa.update(StaffSession).where(col(StaffSession.token_hash) == key).values(**values)
    )
    session.commit()


def csrf_ok(who: SignedIn, supplied: object) -> bool:
    if not isinstance(supplied, str) or not supplied:
        return False
    return hmac.compare_digest(who.csrf_token.encode(), supplied.encode())


def sign_out(session: Session, token: str | None) -> None:
    if token:
        session.exec(delete(StaffSession).where(col(StaffSession.token_hash) == hash_token(token)))
        session.commit()


def end_all_sessions(session: Session, staff: Staff) -> None:
    session.exec(delete(StaffSession).where(col(StaffSession.staff_id) == staff.id))


def purge_expired_sessions(session: Session) -> int:
    result = session.exec(delete(StaffSession).where(col(StaffSession.expires_at) <= utcnow()))
    return int(result.rowcount or 0)

"""Console sessions: a random cookie token, of which only a SHA-256 is stored, with its CSRF token.

A session lasts at most SESSION_LIFETIME; ending a staff member's sessions signs them out
everywhere at once.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlmodel import Session, col, delete

from mailing.models import Staff, StaffSession, utcnow
from mailing.staff.passwords import hash_token

SESSION_LIFETIME = timedelta(hours=8)


@dataclass(frozen=True)
class SignedIn:
    staff: Staff
    csrf_token: str


def aware(when: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes even though we store UTC.
    if when is not None and when.tzinfo is None:
        return when.replace(tzinfo=UTC)
    return when


def start_session(session: Session, staff: Staff) -> str:
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
        )
    )
    session.commit()
    return token


def signed_in(session: Session, token: str | None) -> SignedIn | None:
    """The staff member behind a session cookie, or None if it is unknown, expired or revoked."""
    if not token or len(token) > 200:
        return None
    row = session.get(StaffSession, hash_token(token))
    if row is None:
        return None
    expires = aware(row.expires_at)
    if expires is None or expires <= utcnow():
        session.delete(row)
        session.commit()
        return None
    staff = session.get(Staff, row.staff_id)
    if staff is None or staff.disabled_at is not None:
        return None
    return SignedIn(staff, row.csrf_token)


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

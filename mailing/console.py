"""The staff console's rules: argon2 passwords, server-side sessions, CSRF tokens, lockout,
revoking staff, and the views its pages read (audit log, send progress, failed deliveries).

Only a SHA-256 of a session token is stored, so a copy of the database cannot be used to sign
in. Disabling a staff member ends their sessions and replaces their API token at once.
"""

from __future__ import annotations

import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlmodel import Session, col, delete, select

from mailing import sending
from mailing.addresses import keyed_hash
from mailing.config import get_settings
from mailing.models import AuditLog, Delivery, Staff, StaffSession, Subscriber, Update, utcnow
from mailing.ratelimit import get_limiter
from mailing.staff import hash_token
from mailing.states import DeliveryStatus, UpdateStatus
from mailing.updates import themes_of

SESSION_LIFETIME = timedelta(hours=8)
MAX_FAILED_SIGN_INS = 5
LOCKOUT = timedelta(minutes=15)
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024

# One message whether the address is unknown or the password wrong: the form must not reveal
# which addresses belong to staff.
WRONG_DETAILS = "The email address or password is not right."
LOCKED = (
    "Too many failed attempts to sign in. Wait 15 minutes and try again, or ask an admin for help."
)

_hasher = PasswordHasher()
# Verified against when the address is unknown, so both cases take the same time.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class SignInFailed(Exception):
    """The message is safe to show: it never says whether the address belongs to staff."""


class WeakPassword(ValueError):
    pass


@dataclass(frozen=True)
class SignedIn:
    staff: Staff
    csrf_token: str


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise WeakPassword(f"A password needs at least {MIN_PASSWORD_LENGTH} characters.")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise WeakPassword(f"A password can have at most {MAX_PASSWORD_LENGTH} characters.")
    return _hasher.hash(password)


def set_password(session: Session, staff: Staff, password: str) -> None:
    """Set a staff member's password; their existing console sessions end."""
    staff.password_hash = hash_password(password)
    staff.failed_logins = 0
    staff.locked_until = None
    session.add(staff)
    end_all_sessions(session, staff)


def _aware(when: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes even though we store UTC.
    if when is not None and when.tzinfo is None:
        return when.replace(tzinfo=UTC)
    return when


def find_staff(session: Session, email: str) -> Staff | None:
    wanted = email.strip().lower()
    if not wanted or len(wanted) > 254:
        return None
    return session.exec(select(Staff).where(sa.func.lower(Staff.email) == wanted)).first()


def _password_matches(stored: str | None, password: str) -> bool:
    try:
        return _hasher.verify(stored or _DUMMY_HASH, password[:MAX_PASSWORD_LENGTH]) and (
            stored is not None
        )
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def sign_in(session: Session, email: str, password: str) -> tuple[Staff, str]:
    """Check the address and password; start a session and return (staff, session token).

    Five failures in a row lock the account for 15 minutes. Unknown addresses are limited the
    same way (by a hash of the address), so lockout does not reveal who is staff either.
    """
    now = utcnow()
    staff = find_staff(session, email)
    if staff is None or staff.disabled_at is not None:
        _password_matches(None, password)
        key = keyed_hash(email.strip().lower(), get_settings().secret_key_list[0])
        verdict = get_limiter().hit(
            f"staff-sign-in:{key}", MAX_FAILED_SIGN_INS, int(LOCKOUT.total_seconds())
        )
        raise SignInFailed(WRONG_DETAILS if verdict.allowed else LOCKED)
    locked_until = _aware(staff.locked_until)
    if locked_until is not None and locked_until > now:
        _password_matches(None, password)  # the same time as any other answer
        raise SignInFailed(LOCKED)
    if not _password_matches(staff.password_hash, password):
        # Counted in the database, so parallel attempts cannot undercount.
        session.execute(
            sa.update(Staff)
            .where(col(Staff.id) == staff.id)
            .values(failed_logins=col(Staff.failed_logins) + 1)
        )
        session.refresh(staff)
        if staff.failed_logins >= MAX_FAILED_SIGN_INS:
            staff.failed_logins = 0
            staff.locked_until = now + LOCKOUT
            session.add(staff)
        session.commit()
        # The attempt that locks still says "not right", exactly as for an unknown address.
        raise SignInFailed(WRONG_DETAILS)
    staff.failed_logins = 0
    staff.locked_until = None
    if staff.password_hash and _hasher.check_needs_rehash(staff.password_hash):
        staff.password_hash = _hasher.hash(password)
    session.add(staff)
    token = start_session(session, staff)
    return staff, token


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
    expires = _aware(row.expires_at)
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


def disable(session: Session, staff: Staff) -> None:
    """Revoke a staff member: sessions end, and the API token no longer matches anything."""
    staff.disabled_at = utcnow()
    # A fresh random hash that no token was ever issued for: the old API token is dead.
    staff.token_hash = hash_token(secrets.token_urlsafe(32))
    session.add(staff)
    end_all_sessions(session, staff)


def purge_expired_sessions(session: Session) -> int:
    result = session.exec(delete(StaffSession).where(col(StaffSession.expires_at) <= utcnow()))
    return int(result.rowcount or 0)


def staff_by_id(session: Session, staff_id: int) -> Staff | None:
    return session.get(Staff, staff_id)


def all_staff(session: Session) -> list[Staff]:
    return list(session.exec(select(Staff).order_by(col(Staff.email))).all())


@dataclass(frozen=True)
class AuditEntry:
    at: datetime
    staff_email: str | None
    action: str
    update_id: int | None
    detail: str


_ADDRESS = re.compile(r"[^\s@<>(),;:\"']+@[^\s@<>(),;:\"']+")


def audit_entries(session: Session, *, show_addresses: bool, limit: int = 200) -> list[AuditEntry]:
    """The newest entries first. Only admins see addresses a detail may hold."""
    rows = session.exec(
        select(AuditLog, Staff.email)
        .join(Staff, col(Staff.id) == col(AuditLog.staff_id), isouter=True)
        .order_by(col(AuditLog.at).desc(), col(AuditLog.id).desc())
        .limit(limit)
    ).all()
    entries = []
    for row, email in rows:
        detail = row.detail or ""
        if not show_addresses:
            detail = _ADDRESS.sub("[address hidden]", detail)
        entries.append(
            AuditEntry(_aware(row.at) or row.at, email, row.action, row.update_id, detail)
        )
    return entries


def recent_updates(session: Session, limit: int = 100) -> list[Update]:
    return list(
        session.exec(
            select(Update)
            .order_by(col(Update.created_at).desc(), col(Update.id).desc())
            .limit(limit)
        ).all()
    )


@dataclass(frozen=True)
class Progress:
    """What the progress page and its JSON show about one update's send."""

    status: str
    recipients: int
    sent: int
    failed: int
    cancelled: int  # the subscriber left after the send began: nothing went to them
    pending: int

    @property
    def done(self) -> int:
        return max(0, self.recipients - self.pending)

    @property
    def percent(self) -> int:
        if self.status == UpdateStatus.SENT.value and self.pending == 0:
            return 100
        if not self.recipients:
            return 0
        # Floor, so 100 % is only shown when every delivery is settled.
        return min(100, self.done * 100 // self.recipients)

    @property
    def summary(self) -> str:
        if self.status == UpdateStatus.DRAFT.value:
            return "Not sent yet."
        if self.status == UpdateStatus.SENT.value and self.pending == 0:
            left = f", {self.cancelled} not sent (they left first)" if self.cancelled else ""
            return f"Finished: {self.sent} sent, {self.failed} failed{left}."
        return f"{self.done} of {self.recipients} done."

    def as_json(self) -> dict[str, object]:
        return {
            "status": self.status,
            "recipients": self.recipients,
            "sent": self.sent,
            "failed": self.failed,
            "cancelled": self.cancelled,
            "pending": self.pending,
            "done": self.done,
            "percent": self.percent,
            "summary": self.summary,
        }


@dataclass(frozen=True)
class Failure:
    who: str  # the address for admins, else "subscriber 123"
    error: str | None


def failed_deliveries(
    session: Session, update_id: int, *, show_addresses: bool, limit: int = 100
) -> list[Failure]:
    """Failed deliveries of an update. Only admins see subscribers' addresses."""
    rows = session.exec(
        select(Delivery.subscriber_id, Delivery.error, Subscriber.email)
        .join(Subscriber, col(Subscriber.id) == col(Delivery.subscriber_id), isouter=True)
        .where(col(Delivery.update_id) == update_id)
        .where(col(Delivery.status) == DeliveryStatus.FAILED)
        .order_by(col(Delivery.id))
        .limit(limit)
    ).all()
    return [
        Failure(email if show_addresses and email else f"subscriber {sid}", error)
        for sid, error, email in rows
    ]


def progress(session: Session, update: Update) -> Progress:
    """Live counts from the delivery rows; a draft shows who it would go to, all waiting."""
    live = sending.progress(session, update.id or 0)
    if live.status == UpdateStatus.DRAFT.value:
        waiting = sending.count_recipients(session, themes_of(update))
        return Progress(live.status, waiting, 0, 0, 0, waiting)
    return Progress(
        live.status, live.recipients, live.sent, live.failed, live.cancelled, live.pending
    )

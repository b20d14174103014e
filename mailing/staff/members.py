"""Comms staff members: creating them, finding them, roles, passwords, and disabling them.

Disabling a member ends their sessions and kills their API token at once; a new password ends
their sessions too.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlmodel import Session, col, select

from mailing.audit import AuditAction, audit
from mailing.models import Staff, utcnow
from mailing.staff.apitokens import new_token, revoke_token
from mailing.staff.passwords import hash_password
from mailing.staff.sessions import end_all_sessions
from mailing.states import StaffRole, role_allows


class StaffExists(ValueError):
    """A staff member with this address already exists."""


def create_staff(
    session: Session, email: str, role: StaffRole, *, password: str | None = None
) -> tuple[Staff, str]:
    """Create a staff member; returns the row and their API token (shown once, never stored).

    With a password (for the staff console) it is stored as an argon2 hash.
    """
    email = email.strip().lower()
    if session.exec(select(Staff).where(col(Staff.email) == email)).first() is not None:
        raise StaffExists("a staff member with this address already exists")
    token, digest = new_token()
    staff = Staff(email=email, role=role, token_hash=digest)
    if password is not None:
        staff.password_hash = hash_password(password)
    session.add(staff)
    session.flush()
    audit(session, None, AuditAction.STAFF_CREATED, None, f"staff {staff.id} as {role.value}")
    return staff, token


def may(staff: Staff, needed: StaffRole) -> bool:
    """Whether this staff member's role allows what needs `needed` (roles are ordered)."""
    return role_allows(staff.role, needed)


def find_staff(session: Session, email: str) -> Staff | None:
    wanted = email.strip().lower()
    if not wanted or len(wanted) > 254:
        return None
    return session.exec(select(Staff).where(sa.func.lower(Staff.email) == wanted)).first()


def staff_by_id(session: Session, staff_id: int) -> Staff | None:
    return session.get(Staff, staff_id)


def all_staff(session: Session) -> list[Staff]:
    return list(session.exec(select(Staff).order_by(col(Staff.email))).all())


def set_password(session: Session, staff: Staff, password: str) -> None:
    """Set a staff member's password; their existing console sessions end."""
    staff.password_hash = hash_password(password)
    staff.failed_logins = 0
    staff.locked_until = None
    session.add(staff)
    end_all_sessions(session, staff)


def disable(session: Session, staff: Staff) -> None:
    """Revoke a staff member: sessions end, and the API token no longer matches anything."""
    staff.disabled_at = utcnow()
    revoke_token(session, staff)
    end_all_sessions(session, staff)

"""Comms staff: API tokens (kept only as SHA-256 hashes), roles, and the audit log.

A token is shown once, when the staff member is created; the database holds its hash, so a
copy of the database does not let anyone act as staff.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlmodel import Session, col, select

from mailing.audit import AuditAction, audit
from mailing.models import Staff
from mailing.states import StaffRole, role_allows

TOKEN_BYTES = 32


class StaffExists(ValueError):
    """A staff member with this address already exists."""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_staff(
    session: Session, email: str, role: StaffRole, *, password: str | None = None
) -> tuple[Staff, str]:
    """Create a staff member; returns the row and their API token (shown once, never stored).

    With a password (for the staff console) it is stored as an argon2 hash.
    """
    email = email.strip().lower()
    if session.exec(select(Staff).where(col(Staff.email) == email)).first() is not None:
        raise StaffExists("a staff member with this address already exists")
    token = secrets.token_urlsafe(TOKEN_BYTES)
    staff = Staff(email=email, role=role, token_hash=hash_token(token))
    if password is not None:
        from mailing.console import hash_password  # argon2, with the console's length rules

        staff.password_hash = hash_password(password)
    session.add(staff)
    session.flush()
    audit(session, None, AuditAction.STAFF_CREATED, None, f"staff {staff.id} as {role.value}")
    return staff, token


def staff_for_token(session: Session, token: str) -> Staff | None:
    """The enabled staff member whose API token this is, or None."""
    if not token or len(token) > 200:
        return None
    wanted = hash_token(token)
    staff = session.exec(select(Staff).where(col(Staff.token_hash) == wanted)).first()
    # The index finds the row; the constant-time compare keeps the final check free of timing.
    if staff is None or not hmac.compare_digest(staff.token_hash, wanted):
        return None
    if staff.disabled_at is not None:
        return None
    return staff


def may(staff: Staff, needed: StaffRole) -> bool:
    """Whether this staff member's role allows what needs `needed` (roles are ordered)."""
    return role_allows(staff.role, needed)

"""The audit log: who did what to which update, when. Staff data only, never a resident's."""

from __future__ import annotations

from enum import StrEnum

from sqlmodel import Session

from mailing.models import AuditLog


class AuditAction(StrEnum):
    DRAFTED = "drafted"
    EDITED = "edited"
    TEST_SENT = "test-sent"
    SENT = "sent"
    SCHEDULED = "scheduled"
    UNSCHEDULED = "unscheduled"
    PAUSED = "paused"
    RESUMED = "resumed"
    CANCELLED = "cancelled"
    STAFF_CREATED = "staff-created"
    STAFF_DISABLED = "staff-disabled"
    CONSOLE_SIGN_IN = "console-sign-in"
    CONSOLE_SIGN_OUT = "console-sign-out"


def audit(
    session: Session,
    staff_id: int | None,
    action: AuditAction,
    update_id: int | None = None,
    detail: str | None = None,
) -> None:
    """Append one audit row; the caller commits. Never put a subscriber's address here."""
    session.add(
        AuditLog(
            staff_id=staff_id,
            action=action.value,
            update_id=update_id,
            detail=detail[:500] if detail else None,
        )
    )

"""The staff audit log: who did what, when. Every action is an `AuditAction`, never free text.

Staff data only: a detail never holds a subscriber's address, and readers who are not admins
see any address a detail may hold (a staff member's) masked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from sqlmodel import Session, col, select

from mailing.models import AuditLog, Staff


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
    DUPLICATED = "duplicated"
    DRAFT_DELETED = "draft-deleted"
    STAFF_CREATED = "staff-created"
    STAFF_DISABLED = "staff-disabled"
    CONSOLE_SIGN_IN = "console-sign-in"
    CONSOLE_SIGN_OUT = "console-sign-out"
    # Second factors and API tokens (issue 14)
    SECOND_FACTOR_FAILED = "second-factor-failed"
    SIGN_IN_FAILED = "sign-in-failed"  # a wrong password for a staff account (issue 21)
    REAUTHENTICATED = "re-authenticated"
    FACTOR_ADDED = "factor-added"
    FACTOR_RENAMED = "factor-renamed"
    FACTOR_REMOVED = "factor-removed"
    RECOVERY_CODE_USED = "recovery-code-used"
    RECOVERY_CODES_REPLACED = "recovery-codes-replaced"
    TWO_FACTOR_RESET = "2fa-reset"
    API_TOKEN_ISSUED = "api-token-issued"  # noqa: S105 (an action name, not a secret)
    API_TOKEN_REVOKED = "api-token-revoked"  # noqa: S105 (an action name, not a secret)
    # The support desk and imports (issue 24): the detail names a subscriber id, never an address.
    DESK = "support-desk"
    IMPORTED = "imported"
    # Reliability (issue 27)
    AUTO_PAUSED = "auto-paused"  # the send guard stopped a send (staff_id is None)
    REINSTATED = "reinstated"  # an admin lifted the suppressions one event or window caused
    RESENT_FAILED = "resent-failed"  # an admin re-sent an update to copies that failed
    # Invitations and roles (issue 25)
    STAFF_INVITED = "staff-invited"
    STAFF_ROLE_CHANGED = "staff-role-changed"
    STAFF_ENABLED = "staff-enabled"
    STAFF_ENROLMENT_LINK = "staff-enrolment-link"
    STAFF_ENROLLED = "staff-link-used"
    REVIEW_ASKED = "review-asked"


def audit(
    session: Session,
    staff_id: int | None,
    action: AuditAction,
    update_id: int | None = None,
    detail: str | None = None,
    *,
    client_ip: str | None = None,
) -> None:
    """Append one audit row (who did what to which update, and from which staff IP).

    Never put a subscriber address here.
    """
    session.add(
        AuditLog(
            staff_id=staff_id,
            action=action.value,
            update_id=update_id,
            detail=detail[:500] if detail else None,
            client_ip=client_ip[:45] if client_ip else None,
        )
    )


@dataclass(frozen=True)
class AuditEntry:
    at: datetime
    staff_email: str | None
    action: str
    update_id: int | None
    detail: str
    client_ip: str


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
        # SQLite hands back naive datetimes even though we store UTC.
        at = row.at if row.at.tzinfo else row.at.replace(tzinfo=UTC)
        entries.append(
            AuditEntry(at, email, row.action, row.update_id, detail, row.client_ip or "")
        )
    return entries

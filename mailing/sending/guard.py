"""The send guard: a send that fails too often stops itself before it burns the domain's name.

After each settled chunk, `after_chunk` looks at the send's figures: once at least
MAILING_SEND_GUARD_MIN_ATTEMPTED copies have been attempted and more than
MAILING_SEND_GUARD_MAX_FAILURE_RATE of them failed permanently (a 5xx from the relay) or bounced
hard, the send is paused (the one `pause` transition, so workers stop at their next chunk), its
`error` says why with the figures, the audit log says it was the service, and every sender and
admin is emailed. A sender who resumes it has decided: the guard never pauses the same send twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import sqlalchemy as sa
from sqlmodel import Session, col, select

from mailing.config import get_settings
from mailing.db import get_engine
from mailing.deliverability import suppressions
from mailing.figures import kept_counts
from mailing.mail import outbox
from mailing.models import AuditLog, Staff, Update, table_of
from mailing.staff.audit import AuditAction, audit
from mailing.states import (
    DELIVERED,
    DeliveryStatus,
    NoticeKind,
    StaffRole,
    UpdateStatus,
    UpdateTransitions,
    transition,
)

log = logging.getLogger(__name__)

UPDATE = table_of(Update)


@dataclass(frozen=True)
class Figures:
    attempted: int
    failed: int  # refused by the relay (5xx) or given up after deferrals
    bounced: int  # hard bounces reported back so far

    @property
    def bad(self) -> int:
        return self.failed + self.bounced

    def too_bad(self) -> bool:
        settings = get_settings()
        if self.attempted < settings.send_guard_min_attempted:
            return False
        return self.bad > settings.send_guard_max_failure_rate * self.attempted

    def reason(self) -> str:
        limit = get_settings().send_guard_max_failure_rate * 100
        return (
            f"Paused automatically: {self.bad} of {self.attempted} copies attempted "
            f"({self.bad / self.attempted:.1%}) failed permanently ({self.failed}) or bounced "
            f"hard ({self.bounced}), over the {limit:g} % limit. Check the list and the relay, "
            "then resume to send the rest."
        )


def figures(session: Session, update_id: int) -> tuple[str, Figures] | None:
    """The update's status and its guard figures, from the kept counts: copies the relay took
    (bounced and complained-about ones too), failed, bounced."""
    status = session.execute(sa.select(UPDATE.c.status).where(UPDATE.c.id == update_id)).scalar()
    if status is None:
        return None
    counts = kept_counts.deliveries_of(session, update_id)
    failed = counts.get(DeliveryStatus.FAILED, 0)
    taken = sum(counts.get(s, 0) for s in DELIVERED)
    bounced = counts.get(DeliveryStatus.BOUNCED, 0)
    return str(status), Figures(attempted=taken + failed, failed=failed, bounced=bounced)


def after_chunk(
    update_id: int, refused: list[int], settled: tuple[str, Figures] | None = None
) -> bool:
    """Called once a chunk is settled (committed), with the deliveries the relay refused (5xx)
    and, if the settle answered them, the update's status and figures after it (then a chunk
    nothing was refused in, whose figures are within the limit, costs no query); True if this
    call paused the send."""
    if not refused and settled is not None:
        status, figures_now = settled
        if status != UpdateStatus.SENDING.value or not figures_now.too_bad():
            return False
    suppressions.relay_refused(update_id, refused)
    with Session(get_engine(), expire_on_commit=False) as session:
        found = figures(session, update_id)
        if found is None or found[0] != UpdateStatus.SENDING.value or not found[1].too_bad():
            return False
        already = session.exec(
            select(AuditLog.id).where(
                AuditLog.update_id == update_id, AuditLog.action == AuditAction.AUTO_PAUSED
            )
        ).first()
        if already is not None:
            return False  # paused once and resumed by a sender: theirs to decide
        reason = found[1].reason()
        paused = transition(
            session, UPDATE, UpdateTransitions.PAUSE, UPDATE.c.id == update_id, {"error": reason}
        )
        if not paused:
            return False
        audit(session, None, AuditAction.AUTO_PAUSED, update_id, reason[:500])
        owed = tell_senders(session, update_id)
        session.commit()
        log.warning("update %s: %s", update_id, reason)
    _send_now(owed)
    return True


def tell_senders(session: Session, update_id: int) -> list[int]:
    """Owe every sender and admin who is not disabled a staff notice of the pause, in the
    caller's transaction (the notice outbox: a relay that will not take it now is retried, and
    the console and the API show the pause and its reason anyway). Returns the notice ids."""
    staff = session.exec(
        select(Staff.id).where(
            col(Staff.role).in_([StaffRole.SENDER, StaffRole.ADMIN]),
            col(Staff.disabled_at).is_(None),
        )
    ).all()
    return [
        outbox.queue_staff(session, staff_id, NoticeKind.SEND_PAUSED, update_id=update_id)
        for staff_id in staff
        if staff_id is not None
    ]


def _send_now(notice_ids: list[int]) -> None:
    """Hand the notices to the one pipeline at once; any it cannot send now stay in the outbox
    for the reconciler to re-drive."""
    from mailing.mail import notices

    for notice_id in notice_ids:
        try:
            notices.send(notice_id)
        except Exception as exc:  # the name only: a relay's answer may quote an address
            log.warning(
                "send-paused notice %s: %s; left for a retry", notice_id, type(exc).__name__
            )

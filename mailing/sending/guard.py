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

from mailing.audit import AuditAction, audit
from mailing.config import get_settings
from mailing.db import get_engine
from mailing.deliverability import suppressions
from mailing.emails import TO, prepare
from mailing.mailer import Mailer
from mailing.models import AuditLog, Staff, Update, table_of
from mailing.sending.recipients import DELIVERY
from mailing.states import DeliveryStatus, StaffRole, UpdateStatus, UpdateTransitions, transition

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
    """The update's status and its guard figures (the running counters plus bounced rows)."""
    bounced = (
        sa.select(sa.func.count())
        .select_from(DELIVERY)
        .where(
            DELIVERY.c.update_id == update_id,
            DELIVERY.c.status == DeliveryStatus.BOUNCED.value,
        )
        .scalar_subquery()
    )
    row = session.execute(
        sa.select(UPDATE.c.status, UPDATE.c.sent, UPDATE.c.failed, bounced).where(
            UPDATE.c.id == update_id
        )
    ).first()
    if row is None:
        return None
    status, sent, failed, hard = row
    return str(status), Figures(attempted=int(sent) + int(failed), failed=int(failed), bounced=hard)


def after_chunk(update_id: int, refused: list[int]) -> bool:
    """Called once a chunk is settled (committed), with the deliveries the relay refused (5xx);
    True if this call paused the send."""
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
        session.commit()
        log.warning("update %s: %s", update_id, reason)
        subject = session.get(Update, update_id)
        tell_senders(session, update_id, subject.subject if subject else "", reason)
    return True


def tell_senders(session: Session, update_id: int, subject: str, reason: str) -> int:
    """Email every sender and admin who is not disabled; a relay that will not take it is
    logged (the console and the API show the pause and its reason anyway)."""
    staff = session.exec(
        select(Staff.email).where(
            col(Staff.role).in_([StaffRole.SENDER, StaffRole.ADMIN]),
            col(Staff.disabled_at).is_(None),
        )
    ).all()
    if not staff:
        return 0
    settings = get_settings()
    prepared = prepare(
        "send_paused",
        subject=f"Sending paused: {subject}"[:200],
        context={
            "update_subject": subject,
            "reason": reason,
            "console_url": f"{settings.base_url}/admin/drafts/{update_id}/progress",
        },
    )
    told = 0
    try:
        with Mailer() as mailer:
            for to in staff:
                mailer.send(prepared.envelope_from, to, prepared.personalise({TO: to}))
                told += 1
    except Exception as exc:  # the name only: a relay's answer may quote an address
        log.error("update %s: senders not told of the pause (%s)", update_id, type(exc).__name__)
    return told

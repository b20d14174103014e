"""Re-sending an update to the copies a relay refused in a time window (after reinstating the
people that storm suppressed, mailing/deliverability/suppressions.py)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session

from mailing.deliverability.suppressions import DELIVERY, SUBSCRIBER, Selection, detail
from mailing.errors import Invalid
from mailing.models import Update, table_of
from mailing.sending.control import Publish, WrongState, batch_tasks, publish_safely
from mailing.staff.audit import AuditAction, audit
from mailing.states import (
    DeliveryTransitions,
    SubscriberStatus,
    UpdateStatus,
    UpdateTransitions,
    transition,
)

UPDATE = table_of(Update)
RESENDABLE = frozenset({UpdateStatus.SENT, UpdateStatus.SENDING, UpdateStatus.PAUSED})


def resend_failed(
    session: Session,
    staff_id: int | None,
    update_id: int,
    since: datetime,
    until: datetime,
    reason: str,
    publish: Publish,
) -> int:
    """Send the update again to its copies the relay refused between `since` and `until`, for
    subscribers who are active now (reinstate them first). Commits, then tells the workers."""
    selection = Selection(update_id=update_id, since=since, until=until)
    selection.check()
    if not reason.strip():
        raise Invalid({"reason": "Say why (it goes in the audit log)."})
    update = session.get(Update, update_id)
    if update is None:
        raise Invalid({"update_id": "No such update."})
    if update.status not in RESENDABLE:
        raise WrongState(update, "re-sent")
    active = sa.select(SUBSCRIBER.c.id).where(SUBSCRIBER.c.status == SubscriberStatus.ACTIVE.value)
    requeued = transition(
        session,
        DELIVERY,
        DeliveryTransitions.RETRY,
        sa.and_(
            DELIVERY.c.update_id == update_id,
            DELIVERY.c.failed_at >= since,
            DELIVERY.c.failed_at <= until,
            DELIVERY.c.subscriber_id.in_(active),
        ),
        {"error": None, "retry_at": None, "failed_at": None},
    )
    if requeued:
        transition(session, UPDATE, UpdateTransitions.RESEND, UPDATE.c.id == update_id)
    audit(
        session,
        staff_id,
        AuditAction.RESENT_FAILED,
        update_id,
        detail(f"{requeued} copies again", selection, reason),
    )
    session.commit()
    session.refresh(update)
    if requeued and update.status == UpdateStatus.SENDING:
        publish_safely(publish, update_id, batch_tasks(requeued))
    return requeued

"""The console's read models that are not about staff: recent updates, a send's progress, and
its failed deliveries. Reads only; only admins see subscribers' addresses.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session, col, select

from mailing import sending
from mailing.models import Delivery, Subscriber, Update
from mailing.states import DeliveryStatus, UpdateStatus
from mailing.updates import themes_of


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

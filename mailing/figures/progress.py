"""One read model of a send's progress, for the API, the console and `mailing send`: live counts,
kept by the database in the transaction that changes the delivery rows (figures/kept_counts.py),
never from a cache and never by counting the rows."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from sqlmodel import Session, col, select

import mailing.sending.population as population
from mailing.figures import kept_counts
from mailing.models import Delivery, Subscriber, Update
from mailing.sending.recipients import count_recipients
from mailing.states import DELIVERED, DeliveryStatus, UpdateStatus
from mailing.updates import drafts

# Statuses after which nothing more will be sent.
FINAL = frozenset({UpdateStatus.SENT, UpdateStatus.CANCELLED})


@dataclass(frozen=True)
class Progress:
    status: UpdateStatus
    recipients: int
    sent: int
    failed: int
    cancelled: int  # the subscriber left, or the send was cancelled, before it went
    pending: int
    bounced: int = 0
    complained: int = 0

    @property
    def done(self) -> int:
        return max(0, self.recipients - self.pending)

    @property
    def finished(self) -> bool:
        return self.status in FINAL

    @property
    def percent(self) -> int:
        if self.status == UpdateStatus.SENT and self.pending == 0:
            return 100
        if not self.recipients:
            return 0
        if self.status == UpdateStatus.CANCELLED:
            # How much went out before the cancel, never "100 %" for a send that stopped.
            return min(99, (self.sent + self.failed) * 100 // self.recipients)
        # Floor, so 100 % is only shown when every delivery is settled.
        return min(100, self.done * 100 // self.recipients)

    @property
    def summary(self) -> str:
        if self.status in (UpdateStatus.DRAFT, UpdateStatus.SCHEDULED):
            return "Not sent yet."
        if self.status == UpdateStatus.SENT and self.pending == 0:
            left = f", {self.cancelled} not sent (they left first)" if self.cancelled else ""
            return f"Finished: {self.sent} sent, {self.failed} failed{left}."
        if self.status == UpdateStatus.CANCELLED:
            return (
                f"{self.sent} of {self.recipients} sent before it was cancelled; "
                f"{self.cancelled} not sent."
            )
        if self.status == UpdateStatus.PAUSED:
            return (
                f"{self.done} of {self.recipients} done. Paused: the batches already with the "
                "mail server finish, so the count may still rise for a moment, then it stops "
                "until the send is resumed."
            )
        return f"{self.done} of {self.recipients} done."

    def as_json(self) -> dict[str, object]:
        counts = asdict(self)
        counts["status"] = self.status.value
        return {**counts, "done": self.done, "percent": self.percent, "summary": self.summary}


def progress(session: Session, update_id: int) -> Progress:
    """Live counts (raises UpdateNotFound); a draft or scheduled update shows who it would go
    to now, all waiting."""
    update = drafts.get(session, update_id)
    session.refresh(update)
    if update.status in (UpdateStatus.DRAFT, UpdateStatus.SCHEDULED):
        waiting = count_recipients(session, drafts.themes_of(update))
        return Progress(update.status, waiting, 0, 0, 0, waiting)
    counts = kept_counts.deliveries_of(session, update_id)
    pending = counts.get(DeliveryStatus.PENDING, 0)
    if population.is_open(session, update_id):
        # Rows still being written (mailing/sending/population.py): whoever is not settled yet
        # is pending, written or not.
        settled = sum(n for s, n in counts.items() if s != DeliveryStatus.PENDING)
        pending = max(pending, update.recipients - settled)
    return Progress(
        status=update.status,
        recipients=update.recipients,
        # Bounced and complained-about mail was sent too: the relay took it.
        sent=sum(counts.get(s, 0) for s in DELIVERED),
        failed=counts.get(DeliveryStatus.FAILED, 0),
        cancelled=counts.get(DeliveryStatus.CANCELLED, 0),
        pending=pending,
        bounced=counts.get(DeliveryStatus.BOUNCED, 0),
        complained=counts.get(DeliveryStatus.COMPLAINED, 0),
    )


def recent_updates(session: Session, limit: int = 100) -> list[Update]:
    """The newest updates first, for the console's list."""
    return list(
        session.exec(
            select(Update)
            .order_by(col(Update.created_at).desc(), col(Update.id).desc())
            .limit(limit)
        ).all()
    )


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

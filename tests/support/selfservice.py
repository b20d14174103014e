"""Helpers for the self-service tests: an active subscriber made through the real sign-up, the
links from a real email sent to them, and delivery rows for an update."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Session, select

from mailing.models import Delivery, Subscriber, Update
from mailing.states import DeliveryStatus, UpdateStatus
from mailing.subscribers.addresses import normalise
from tests.conftest import drain_worker
from tests.support.helpers import only_link, subscribe


def next_mail(smtp: Any, action: Any) -> Any:
    """Run `action` and return the one email it caused."""
    before = _count(smtp)
    action()
    mails = smtp.outbox.wait_for(before + 1)
    assert len(mails) >= before + 1, "no email arrived"
    return mails[-1]


def _count(smtp: Any) -> int:
    drain_worker()
    return len(smtp.outbox.messages())


def active_subscriber(
    client: Any, smtp: Any, session: Session, email: str, themes: list[str] | None = None
) -> Subscriber:
    mail = next_mail(smtp, lambda: subscribe(client, email, themes))
    assert client.post(only_link(mail, "confirm")).status_code == 200
    drain_worker()  # the welcome email goes, and its outbox row with it
    return reload(session, email)


def reload(session: Session, email: str) -> Subscriber:
    session.expire_all()
    key = normalise(email).key
    return session.exec(select(Subscriber).where(Subscriber.email_key == key)).one()


def management_links(client: Any, smtp: Any, email: str) -> dict[str, str]:
    """The unsubscribe and preferences links from a real email: signing up again while active
    sends the "already subscribed" email, which carries both."""
    mail = next_mail(smtp, lambda: subscribe(client, email))
    return {
        "unsubscribe": only_link(mail, "unsubscribe"),
        "preferences": only_link(mail, "preferences"),
    }


def add_delivery(
    session: Session,
    subscriber_id: int,
    *,
    subject: str = "Health update",
    status: DeliveryStatus = DeliveryStatus.PENDING,
    sent_at: datetime | None = None,
) -> Delivery:
    """An update being sent and this subscriber's row in it, as the send pipeline makes them."""
    update = Update(
        subject=subject, body="Body", themes="healthy-minds", status=UpdateStatus.SENDING
    )
    session.add(update)
    session.flush()
    assert update.id is not None
    delivery = Delivery(
        update_id=update.id, subscriber_id=subscriber_id, status=status, sent_at=sent_at
    )
    session.add(delivery)
    session.commit()
    return delivery

"""Helpers for the deliverability tests: an update already handed to the relay, the inbound
receiver on loopback, SMTP delivery to it, metric readings."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import sqlalchemy as sa

from mailing.db import get_engine
from mailing.deliverability import returnpath
from mailing.deliverability.inbound import InboundServer
from mailing.mail.devcapture import _free_port
from mailing.metrics import REGISTRY
from mailing.models import Delivery, Subscriber, utcnow
from mailing.states import DeliveryStatus, SubscriberStatus
from tests.support.sending import add_subscribers, draft, start

DOMAIN = "bounce.test"


@dataclass(frozen=True)
class Copy:
    delivery_id: int
    subscriber_id: int
    email: str

    @property
    def ref(self) -> str:
        return returnpath.encode(
            returnpath.Ref(returnpath.RefKind.DELIVERY, self.subscriber_id, self.delivery_id)
        )

    @property
    def return_path(self) -> str:
        return f"bounce+{self.ref}@{DOMAIN}"


def sent_update(count: int = 1, prefix: str = "reader") -> list[Copy]:
    """`count` new active subscribers and an update whose copies the relay took (`sent`)."""
    add_subscribers(count, ["healthy-minds"], prefix=prefix)
    return another_update()


def another_update() -> list[Copy]:
    """A further update to every active subscriber, also handed to the relay."""
    uid = draft(themes=["healthy-minds"])
    start(uid, enqueue=False)
    with get_engine().begin() as conn:
        conn.execute(
            sa.update(Delivery)
            .where(Delivery.update_id == uid)
            .values(status=DeliveryStatus.SENT, sent_at=utcnow())
        )
        rows = conn.execute(
            sa.select(Delivery.id, Delivery.subscriber_id, Subscriber.email)
            .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
            .where(Delivery.update_id == uid)
            .order_by(Delivery.id)
        ).all()
    return [Copy(int(d), int(s), str(e)) for d, s, e in rows]


def delivery_status(delivery_id: int) -> DeliveryStatus:
    with get_engine().connect() as conn:
        value = conn.execute(
            sa.select(Delivery.status).where(Delivery.id == delivery_id)
        ).scalar_one()
    return DeliveryStatus(value)


def delivery_error(delivery_id: int) -> str | None:
    with get_engine().connect() as conn:
        return conn.execute(
            sa.select(Delivery.error).where(Delivery.id == delivery_id)
        ).scalar_one()


def subscriber_status(subscriber_id: int) -> SubscriberStatus | None:
    with get_engine().connect() as conn:
        value = conn.execute(
            sa.select(Subscriber.status).where(Subscriber.id == subscriber_id)
        ).scalar_one_or_none()
    return None if value is None else SubscriberStatus(value)


@contextmanager
def inbound_server() -> Iterator[InboundServer]:
    server = InboundServer("127.0.0.1", _free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


def send_to(server: InboundServer, to: str, raw: bytes, mail_from: str = "") -> None:
    """Deliver over SMTP as a mail server would (a bounce has the null sender); raises
    smtplib errors for a refusal."""
    with smtplib.SMTP(server.hostname, server.port, timeout=30) as smtp:
        smtp.sendmail(mail_from, [to], raw)


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0

"""What a bounce, a complaint or an email unsubscribe does: each is a named transition in
mailing/states.py, applied as a conditional UPDATE, so every rule is idempotent and safe to run
twice, out of order, or late.

- A hard bounce marks the delivery `bounced` and the subscriber `bounced` (suppressed like an
  unsubscribe: never mailed again unless they sign up and confirm again).
- A soft bounce is counted; `soft_bounce_limit` of them on as many different updates within
  `soft_bounce_window_days` count as a hard bounce.
- A complaint marks the delivery `complained`; it and an email unsubscribe are unsubscribes,
  recorded in the consent ledger with their channel.
- Something about a subscriber who has since been erased changes nothing and stores nothing; one
  about a copy sent before the subscriber confirmed again does not touch the subscriber.

The caller commits.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col, select

from mailing.config import get_settings
from mailing.deliverability.classify import Kind, Verdict
from mailing.deliverability.returnpath import Ref, RefKind
from mailing.deliverability.suppressions import Cause, cause_values
from mailing.errors import InvalidLink
from mailing.metrics import BOUNCES, COMPLAINTS
from mailing.models import Delivery, SoftBounce, Subscriber, utcnow
from mailing.states import ConsentChannel, DeliveryTransitions, SubscriberTransitions, transition
from mailing.subscribers import links, rights
from mailing.subscribers.tokens import Purpose

log = logging.getLogger(__name__)

ERROR_CHARS = 200


class Outcome(StrEnum):
    HARD_BOUNCE = "hard_bounce"
    SOFT_BOUNCE = "soft_bounce"
    COMPLAINT = "complaint"
    UNSUBSCRIBE = "unsubscribe"
    IGNORED = "ignored"  # not a bounce or report, or about no one we still hold
    FORGED = "forged"  # a ref or token that does not verify
    # Refused before any rule runs (the labels of mailing_inbound_messages_total, all in one place):
    REFUSED_RECIPIENT = "refused_recipient"  # not in the bounce domain: never relayed
    TOO_BIG = "too_big"  # over inbound_max_bytes
    ERROR = "error"  # the database was down (or a bug): the sender was asked to retry
    UNSIGNED = "unsigned"  # a webhook call whose SNS signature did not verify


def take(
    session: Session, verdict: Verdict, ref: Ref | None, *, now: datetime | None = None
) -> Outcome:
    """Apply a classified message about `ref` (from its return path, or found in a report)."""
    now = now or utcnow()
    if verdict.kind == Kind.COMPLAINT:
        return complaint(session, ref, verdict.unsubscribe_token)
    if verdict.kind == Kind.IGNORED or ref is None:
        return Outcome.IGNORED
    if verdict.kind == Kind.HARD:
        BOUNCES.labels("hard").inc()
        hard_bounce(session, ref, verdict.status, verdict.diagnostic, now)
        return Outcome.HARD_BOUNCE
    BOUNCES.labels("soft").inc()
    soft_bounce(session, ref, verdict.status, now)
    return Outcome.SOFT_BOUNCE


# --- Who a ref names ----------------------------------------------------------------------------


def _named(session: Session, ref: Ref) -> tuple[Subscriber | None, Delivery | None]:
    """The subscriber (and delivery) a ref names; None for what no longer exists."""
    subscriber = session.get(Subscriber, ref.subscriber_id)
    if subscriber is None:
        return None, None
    if ref.kind == RefKind.NOTICE:
        return subscriber, None
    delivery = session.get(Delivery, ref.delivery_id)
    if delivery is None or delivery.subscriber_id != subscriber.id:
        return None, None
    return subscriber, delivery


def _late(subscriber: Subscriber, delivery: Delivery | None) -> bool:
    """The copy went out before the subscriber last confirmed: it says nothing about them now."""
    if delivery is None or delivery.sent_at is None or subscriber.confirmed_at is None:
        return False
    return subscriber.confirmed_at > delivery.sent_at


def _delivery_table() -> sa.Table:
    return Delivery.__table__  # type: ignore[attr-defined,no-any-return]


# --- Bounces ------------------------------------------------------------------------------------


def hard_bounce(session: Session, ref: Ref, status: str, diagnostic: str, now: datetime) -> bool:
    """Mark the copy and its subscriber bounced; True if the subscriber's status changed."""
    subscriber, delivery = _named(session, ref)
    if subscriber is None:
        return False
    table = _delivery_table()
    if delivery is not None:
        error = f"hard {status or '5.0.0'}: {diagnostic}".strip()[:ERROR_CHARS]
        transition(
            session, table, DeliveryTransitions.BOUNCE, table.c.id == delivery.id, {"error": error}
        )
    if _late(subscriber, delivery):
        return False
    return _bounce_subscriber(session, subscriber, now, delivery.update_id if delivery else None)


def _bounce_subscriber(
    session: Session, subscriber: Subscriber, now: datetime, update_id: int | None
) -> bool:
    assert subscriber.id is not None
    bounce = SubscriberTransitions.BOUNCE
    cause = cause_values(Cause.BOUNCE, update_id)
    changed = rights.stop_mail(session, subscriber, bounce, now, cause)
    if changed:
        # Nothing about why: the delivery row keeps the status code.
        session.execute(sa.delete(SoftBounce).where(col(SoftBounce.subscriber_id) == subscriber.id))
        log.info("subscriber %s bounced", subscriber.id)
    return changed


def soft_bounce(session: Session, ref: Ref, status: str, now: datetime) -> bool:
    """Count a temporary failure; True if it was the one that made the subscriber bounced."""
    subscriber, delivery = _named(session, ref)
    if subscriber is None or delivery is None or _late(subscriber, delivery):
        return False  # a notice's soft bounce says too little to count
    settings = get_settings()
    since = now - timedelta(days=settings.soft_bounce_window_days)
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    session.execute(
        insert(SoftBounce)
        .values(
            subscriber_id=subscriber.id,
            update_id=delivery.update_id,
            status_code=status or "4.0.0",
            occurred_at=now,
        )
        .on_conflict_do_nothing(index_elements=["subscriber_id", "update_id"])
    )
    window = col(SoftBounce.subscriber_id) == subscriber.id
    session.execute(sa.delete(SoftBounce).where(window, col(SoftBounce.occurred_at) < since))
    counted = session.exec(
        select(sa.func.count(sa.distinct(col(SoftBounce.update_id)))).where(window)
    ).one()
    if int(counted) < settings.soft_bounce_limit:
        return False
    return hard_bounce(
        session,
        ref,
        status,
        f"{counted} soft bounces in {settings.soft_bounce_window_days} days",
        now,
    )


# --- Complaints and unsubscribes by email -------------------------------------------------------


def complaint(session: Session, ref: Ref | None, unsubscribe_token: str = "") -> Outcome:
    """A spam complaint about a copy: the delivery `complained`, the subscriber unsubscribed."""
    subscriber: Subscriber | None = None
    delivery: Delivery | None = None
    if ref is not None:
        subscriber, delivery = _named(session, ref)
    elif unsubscribe_token:
        subscriber = _by_token(session, unsubscribe_token)
    if subscriber is None:
        return Outcome.IGNORED
    COMPLAINTS.inc()
    if delivery is not None:
        table = _delivery_table()
        transition(session, table, DeliveryTransitions.COMPLAIN, table.c.id == delivery.id)
    if not _late(subscriber, delivery) and rights.unsubscribe(
        session, subscriber, channel=ConsentChannel.COMPLAINT
    ):
        subscriber.suppression_update_id = delivery.update_id if delivery else None
    return Outcome.COMPLAINT


def email_unsubscribe(session: Session, token: str) -> Outcome:
    """A message to the `mailto:` List-Unsubscribe address: the same as the link's button."""
    subscriber = _by_token(session, token)
    if subscriber is None:
        return Outcome.FORGED
    rights.unsubscribe(session, subscriber, channel=ConsentChannel.EMAIL)
    return Outcome.UNSUBSCRIBE


def _by_token(session: Session, token: str) -> Subscriber | None:
    try:
        return links.subscriber_for(session, Purpose.UNSUBSCRIBE, token)
    except InvalidLink:
        return None

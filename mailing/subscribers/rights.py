"""A subscriber's rights, exercised from links in their emails: unsubscribe, change themes and
frequency, download their data (erasure and the purge are in erasure.py).

Downloading and erasing need a short-lived link emailed to the subscriber's own address (asked
for from the preferences page or the erasure-request form): a forwarded update gives neither.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlmodel import Session, col, select

from mailing.deliverability.suppressions import Cause, cause_values
from mailing.errors import InvalidLink, LinkProblem, NotActive
from mailing.metrics import UNSUBSCRIBES
from mailing.models import (
    Delivery,
    Notice,
    SoftBounce,
    Subscriber,
    Update,
    table_of,
    utcnow,
)
from mailing.sending.digests import export_rows as weekly_summary_rows
from mailing.states import (
    ConsentChannel,
    ConsentEventKind,
    DeliveryTransitions,
    Frequency,
    SubscriberStatus,
    SubscriberTransitions,
    Transition,
    transition,
)
from mailing.subscribers import consent, records
from mailing.subscribers import frequency as frequencies

log = logging.getLogger(__name__)

LINK_EMAIL_WINDOW = 3600
# Every rate-limit key that names a person by their address hash; erasure forgets them all.
ADDRESS_LIMIT_PREFIXES = ("confirm-mail:", "erase-mail:", "export-mail:")
# A confirmation link is minted by the worker moments after the request is recorded; wait a
# little past its expiry before deleting the sign-up, so a link never outlives its record.
UNCONFIRMED_GRACE = timedelta(hours=1)
DELIVERY = table_of(Delivery)
SUBSCRIBER = table_of(Subscriber)


# --- Unsubscribe and preferences ------------------------------------------------------------


def unsubscribe(
    session: Session,
    subscriber: Subscriber,
    *,
    channel: ConsentChannel,
    kind: ConsentEventKind = ConsentEventKind.WITHDRAWN,
    at: datetime | None = None,
) -> bool:
    """Stop all mail to this subscriber at once; True if this call changed their status.

    Their pending deliveries are cancelled in the same transaction, so an update already being
    sent cannot reach them after this commits. The status changes through the named transition
    (one conditional UPDATE), so of two unsubscribes at once only one changes it and only that
    one records the withdrawal.
    """
    assert subscriber.id is not None
    # Why (mailing/deliverability/suppressions.py): a complaint report, or their own wish.
    cause = Cause.COMPLAINT if channel == ConsentChannel.COMPLAINT else Cause.UNSUBSCRIBE
    t = SubscriberTransitions.UNSUBSCRIBE
    if not stop_mail(session, subscriber, t, at or utcnow(), cause_values(cause, None)):
        # Already unsubscribed (nothing to do), or pending (never confirmed, so never mailed).
        return False
    consent.record_many(
        session,
        [consent.Event(subscriber.id, kind, channel, [], with_wording=False, occurred_at=at)],
    )
    UNSUBSCRIBES.inc()
    log.info("subscriber %s unsubscribed (%s)", subscriber.id, ConsentChannel(channel).value)
    return True


def stop_mail(
    session: Session,
    subscriber: Subscriber,
    t: Transition[SubscriberStatus],
    now: datetime,
    cause: dict[str, Any],
) -> bool:
    """Cancel the subscriber's pending deliveries, then apply `t` (unsubscribe or bounce) to
    their row with the suppression's cause; True if this call changed their status (a racing
    caller's UPDATE matches none).

    Deliveries are updated before the subscriber row: the send pipeline locks a delivery before
    it reads the subscriber, and taking locks in the same order means the two never deadlock.
    """
    assert subscriber.id is not None
    cancel = DeliveryTransitions.CANCEL
    transition(session, DELIVERY, cancel, DELIVERY.c.subscriber_id == subscriber.id)
    changed = transition(
        session,
        SUBSCRIBER,
        t,
        SUBSCRIBER.c.id == subscriber.id,
        {"unsubscribed_at": now, "updated_at": now, **cause},
    )
    session.expire(subscriber, ["status", "unsubscribed_at", "updated_at", *cause])
    return bool(changed)


class ThemesOutcome(StrEnum):
    CHANGED = "changed"
    UNCHANGED = "unchanged"
    UNSUBSCRIBED = "unsubscribed"


def change_preferences(
    session: Session,
    subscriber: Subscriber,
    themes: list[str] | None,
    frequency: Frequency | None,
    *,
    channel: ConsentChannel,
) -> ThemesOutcome:
    """Change an active subscriber's themes (None: keep them) and frequency (None: keep it);
    choosing no themes is unsubscribing. NotActive unless the subscription is active.

    Their row is locked first and read afresh (records.lock), so a change made meanwhile (another
    click, the desk, an unsubscribe) is seen whole before anything is decided or written."""
    _lock(session, subscriber)
    if subscriber.status != SubscriberStatus.ACTIVE:
        raise NotActive(subscriber.status)
    outcome = (
        ThemesOutcome.UNCHANGED
        if themes is None
        else _change_themes(session, subscriber, themes, channel=channel)
    )
    if frequency is not None and outcome != ThemesOutcome.UNSUBSCRIBED:
        frequencies.change(session, subscriber, frequency, channel=channel)
    return outcome


def change_themes(
    session: Session, subscriber: Subscriber, themes: list[str], *, channel: ConsentChannel
) -> ThemesOutcome:
    """Set an active subscriber's themes; choosing none is unsubscribing. NotActive otherwise.
    Their row is locked first, as in change_preferences."""
    _lock(session, subscriber)
    return _change_themes(session, subscriber, themes, channel=channel)


def _lock(session: Session, subscriber: Subscriber) -> None:
    # Erased since the link was checked: the link is dead, as it would be a moment later.
    if not records.lock(session, subscriber):
        raise InvalidLink(LinkProblem.INVALID)


def _change_themes(
    session: Session, subscriber: Subscriber, themes: list[str], *, channel: ConsentChannel
) -> ThemesOutcome:
    assert subscriber.id is not None
    if subscriber.status != SubscriberStatus.ACTIVE:
        raise NotActive(subscriber.status)
    if not themes:
        unsubscribe(session, subscriber, channel=channel)
        return ThemesOutcome.UNSUBSCRIBED
    if themes == records.themes_of(session, subscriber.id):
        return ThemesOutcome.UNCHANGED
    records.set_themes(session, subscriber, themes)
    session.add(subscriber)
    consent.record(session, subscriber.id, ConsentEventKind.CHANGED, channel=channel, themes=themes)
    log.info("subscriber %s changed themes", subscriber.id)
    return ThemesOutcome.CHANGED


# --- Right of access ------------------------------------------------------------------------

# Where each table holding a subscriber's rows appears in their export. The export test finds
# every table that points at a subscriber by itself and fails if one is missing here.
EXPORT_SECTIONS: dict[str, str] = {
    "subscriber": "subscriber",
    "subscriber_theme": "themes",
    "consent_event": "consent_ledger",
    "delivery": "deliveries",
    "notice": "emails_waiting",
    "weekly_digest": "weekly_summaries",
    "soft_bounce": "soft_bounces",
}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def export(session: Session, subscriber: Subscriber) -> dict[str, Any]:
    """Everything we hold about one subscriber, as a JSON-ready dict."""
    assert subscriber.id is not None
    deliveries = session.exec(
        select(Delivery, Update)
        .join(Update, col(Update.id) == Delivery.update_id)
        .where(Delivery.subscriber_id == subscriber.id)
        .order_by(col(Delivery.id))
    ).all()
    return {
        "about": (
            "Everything the Health Inequalities Strategy updates service holds about you. "
            "We use it only to send you the updates you chose, and never pass it to anyone."
        ),
        "exported_at": utcnow().isoformat(),
        "subscriber": {
            "email": subscriber.email,
            "status": subscriber.status.value,
            "created_at": _iso(subscriber.created_at),
            "updated_at": _iso(subscriber.updated_at),
            "confirmed_at": _iso(subscriber.confirmed_at),
            "unsubscribed_at": _iso(subscriber.unsubscribed_at),
            "frequency": subscriber.frequency.value,
            # Why mail to them stopped, if it did (a bounce, a complaint, an unsubscribe...).
            "suppression_cause": subscriber.suppression_cause,
            # A keyed hash of the address, kept after an earlier erasure so we would not mail
            # it; it goes when this subscription is confirmed.
            "on_suppression_list": records.is_suppressed(session, subscriber.email_key),
        },
        "themes": records.themes_of(session, subscriber.id),
        "consent_ledger": consent.ledger(session, subscriber.id),
        "emails_waiting": [
            {"kind": n.kind.value, "queued_at": _iso(n.created_at)}
            for n in session.exec(
                select(Notice).where(Notice.subscriber_id == subscriber.id).order_by(col(Notice.id))
            ).all()
        ],
        "deliveries": [
            {
                "update_id": d.update_id,
                "subject": u.subject,
                "status": d.status.value,
                "sent_at": _iso(d.sent_at),
            }
            for d, u in deliveries
        ],
        "weekly_summaries": weekly_summary_rows(session, subscriber.id),
        # Temporary delivery failures counted towards a bounce (the code only, no message).
        "soft_bounces": [
            {"update_id": b.update_id, "status": b.status_code, "at": _iso(b.occurred_at)}
            for b in session.exec(
                select(SoftBounce)
                .where(SoftBounce.subscriber_id == subscriber.id)
                .order_by(col(SoftBounce.id))
            ).all()
        ],
    }

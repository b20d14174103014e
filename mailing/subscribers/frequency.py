"""How often a subscriber hears from us: each update as it is sent, or a weekly summary.

Changing it is a change of what the person agreed to, so it goes in the consent ledger. Who gets
each update immediately is decided in mailing/sending.py (weekly subscribers are left out there);
the weekly summary is mailing/sending/digests.py's.
"""

from __future__ import annotations

import logging

from sqlmodel import Session

from mailing.models import Subscriber, utcnow
from mailing.states import ConsentChannel, ConsentEventKind, Frequency
from mailing.subscribers import consent, records

log = logging.getLogger(__name__)


def change(
    session: Session, subscriber: Subscriber, frequency: Frequency, *, channel: ConsentChannel
) -> bool:
    """Set an active subscriber's frequency; True if it changed. The caller checks the status
    and commits."""
    assert subscriber.id is not None
    if subscriber.frequency == frequency:
        return False
    subscriber.frequency = frequency
    subscriber.updated_at = utcnow()
    session.add(subscriber)
    consent.record(
        session,
        subscriber.id,
        ConsentEventKind.CHANGED,
        channel=channel,
        themes=records.themes_of(session, subscriber.id),
        frequency=frequency,
    )
    log.info("subscriber %s changed frequency", subscriber.id)
    return True


DESCRIPTIONS: dict[Frequency, str] = {
    Frequency.IMMEDIATE: "each update, as soon as it is sent",
    Frequency.WEEKLY: "one weekly summary, on Saturday mornings",
}

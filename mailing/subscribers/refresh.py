"""Consent refresh (off unless MAILING_CONSENT_REFRESH_YEARS is set): consent older than that is
asked to be renewed, once, and lapses quietly if the person does not answer within 30 days.

A subscriber's consent dates from their newest ledger event that gave it (confirmed, imported,
renewed). When that is older than the setting, they are sent one email with the current wording
and a button to stay, and the ledger records `refresh-asked` (with the wording shown). Pressing
the button records `renewed`; nobody is asked twice for one consent. Thirty days after the ask
without a renewal they are unsubscribed, the ledger records `lapsed`, and the suppression list
holds their keyed hash (a fresh confirmed sign-up lifts it). Every function takes `now`, so a
test can move the clock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, col

from mailing.config import get_settings
from mailing.mail import outbox
from mailing.models import ConsentEvent, Subscriber, table_of
from mailing.states import ConsentChannel, ConsentEventKind, NoticeKind, SubscriberStatus
from mailing.subscribers import consent, records, rights

log = logging.getLogger(__name__)

ANSWER_DAYS = 30
BATCH = 500  # asks per run: the hourly job spreads a large backlog over the day
CHANNEL = ConsentChannel.CONSENT_REFRESH
GIVING = (ConsentEventKind.CONFIRMED, ConsentEventKind.IMPORTED, ConsentEventKind.RENEWED)

EVENT = table_of(ConsentEvent)
SUBSCRIBER = table_of(Subscriber)


def _latest(kinds: tuple[ConsentEventKind, ...], name: str) -> sa.Subquery:
    return (
        sa.select(EVENT.c.subscriber_id, sa.func.max(EVENT.c.occurred_at).label("at"))
        .where(EVENT.c.kind.in_([k.value for k in kinds]))
        .group_by(EVENT.c.subscriber_id)
        .subquery(name)
    )


def _active_with_times() -> tuple[sa.Select[tuple[int]], sa.Subquery, sa.Subquery]:
    given = _latest(GIVING, "given")
    asked = _latest((ConsentEventKind.REFRESH_ASKED,), "asked")
    query = (
        sa.select(SUBSCRIBER.c.id)
        .join(given, given.c.subscriber_id == SUBSCRIBER.c.id)
        .outerjoin(asked, asked.c.subscriber_id == SUBSCRIBER.c.id)
        .where(SUBSCRIBER.c.status == SubscriberStatus.ACTIVE.value)
    )
    return query, given, asked


def _due(now: datetime, years: int) -> sa.Select[tuple[int]]:
    """Active subscribers whose consent is older than `years` and who were not asked since."""
    query, given, asked = _active_with_times()
    cutoff = now - timedelta(days=round(365.25 * years))
    return query.where(given.c.at < cutoff).where(
        sa.or_(asked.c.at.is_(None), asked.c.at < given.c.at)
    )


def _lapsing(now: datetime) -> sa.Select[tuple[int]]:
    """Active subscribers asked at least ANSWER_DAYS ago who have not renewed since."""
    query, given, asked = _active_with_times()
    return query.where(asked.c.at >= given.c.at).where(
        asked.c.at <= now - timedelta(days=ANSWER_DAYS)
    )


@dataclass(frozen=True)
class Figures:
    """What staff see: no personal data."""

    years: int  # 0: refresh is off
    due: int  # to be asked at the next runs
    awaiting: int  # asked, not yet answered, not yet lapsed


def figures(session: Session, now: datetime) -> Figures:
    years = get_settings().consent_refresh_years
    if years <= 0:
        return Figures(0, 0, 0)
    query, given, asked = _active_with_times()
    awaiting = query.where(asked.c.at >= given.c.at)
    return Figures(years, _count(session, _due(now, years)), _count(session, awaiting))


def _count(session: Session, query: sa.Select[tuple[int]]) -> int:
    counted = sa.select(sa.func.count()).select_from(query.subquery())
    return int(session.execute(counted).scalar_one())


@dataclass(frozen=True)
class RunResult:
    asked: int
    lapsed: int


def run(session: Session, now: datetime, publish: Callable[[list[int]], None]) -> RunResult:
    """One pass (the hourly job): lapse the unanswered, then ask up to BATCH who are due. Commits;
    publishes the asks' notices after the commit (a lost publish is re-driven from the outbox)."""
    years = get_settings().consent_refresh_years
    if years <= 0:
        return RunResult(0, 0)
    lapsed = 0
    for subscriber_id in session.execute(_lapsing(now).order_by(SUBSCRIBER.c.id)).scalars():
        subscriber = session.get(Subscriber, subscriber_id, with_for_update=True)
        if subscriber is not None and subscriber.status == SubscriberStatus.ACTIVE:
            rights.unsubscribe(
                session, subscriber, channel=CHANNEL, kind=ConsentEventKind.LAPSED, at=now
            )
            records.suppress(session, subscriber.email_key, "lapsed")
            lapsed += 1
    due = list(session.execute(_due(now, years).order_by(SUBSCRIBER.c.id).limit(BATCH)).scalars())
    consent.record_many(
        session,
        [
            consent.Event(
                int(sid),
                ConsentEventKind.REFRESH_ASKED,
                CHANNEL,
                records.themes_of(session, int(sid)),
                occurred_at=now,
            )
            for sid in due
        ],
    )
    notice_ids = outbox.queue_many(
        session, [outbox.Owed(int(sid), NoticeKind.CONSENT_REFRESH) for sid in due]
    )
    session.commit()
    if notice_ids:
        try:
            publish(notice_ids)
        except Exception as exc:  # the broker is down: the reconciler re-drives the outbox
            log.warning("consent refresh: could not publish (%s)", type(exc).__name__)
    if lapsed or due:
        log.info("consent refresh: %d asked, %d lapsed", len(due), lapsed)
    return RunResult(len(due), lapsed)


def renew(session: Session, subscriber: Subscriber, now: datetime) -> bool:
    """The button in the email: consent renewed, with the current wording. False if they are no
    longer subscribed (lapsed or left: only a fresh sign-up brings them back)."""
    if subscriber.status != SubscriberStatus.ACTIVE or subscriber.id is None:
        return False
    consent.record_many(
        session,
        [
            consent.Event(
                subscriber.id,
                ConsentEventKind.RENEWED,
                ConsentChannel.EMAIL_LINK,
                records.themes_of(session, subscriber.id),
                frequency=subscriber.frequency,
                occurred_at=now,
            )
        ],
    )
    return True


def asked_at(session: Session, subscriber_id: int) -> datetime | None:
    return session.execute(
        sa.select(sa.func.max(EVENT.c.occurred_at))
        .where(EVENT.c.subscriber_id == subscriber_id)
        .where(col(ConsentEvent.kind) == ConsentEventKind.REFRESH_ASKED)
    ).scalar()

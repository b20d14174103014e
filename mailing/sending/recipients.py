"""Who receives an update: the one place that decides.

An update reaches each active subscriber who chose at least one of its themes, once: the
delivery rows are written by one INSERT ... SELECT per keyset page (rows never enter Python), and
the unique key (update, subscriber) makes writing them twice harmless. The request that starts a
send writes the first page; the workers write the rest while they send
(mailing/sending/population.py). How many they are now is kept by the database, with the same
predicate (migration 0018: `figures.kept_counts.reach`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session

from mailing.db import is_postgres
from mailing.figures import kept_counts
from mailing.models import Delivery, Subscriber, SubscriberTheme, table_of
from mailing.states import DeliveryStatus, Frequency, SubscriberStatus

POPULATE_CHUNK = 5000

SUBSCRIBER = table_of(Subscriber)
THEME = table_of(SubscriberTheme)
DELIVERY = table_of(Delivery)


def _recipients(themes: Sequence[str]) -> sa.ColumnElement[bool]:
    chose_a_theme = (
        sa.select(sa.literal(1))
        .where(THEME.c.subscriber_id == SUBSCRIBER.c.id, THEME.c.theme.in_(list(themes)))
        .exists()
    )
    # Weekly subscribers get updates in their Saturday summary instead (mailing/sending/digests.py).
    return sa.and_(
        SUBSCRIBER.c.status == SubscriberStatus.ACTIVE.value,
        SUBSCRIBER.c.frequency == Frequency.IMMEDIATE.value,
        chose_a_theme,
    )


def count_recipients(session: Session, themes: Sequence[str]) -> int:
    """How many would receive an update on these themes now (for the compose, drafts, send and
    progress pages, and a send's start): the subscribers `_recipients` selects, counted by the
    database as they change (migration 0018's reach_count), not by a join."""
    return kept_counts.reach(session, themes).get(Frequency.IMMEDIATE.value, 0)


def write_page(
    session: Session, update_id: int, themes: Sequence[str], now: datetime, after: int
) -> tuple[int, bool]:
    """Write the pending deliveries of the next keyset page of recipients (subscriber ids after
    `after`, at most POPULATE_CHUNK of them) in the caller's transaction. Returns the cursor to
    carry on from, and whether there may be more (False: this page reached the end)."""
    dialect_insert = pg_insert if is_postgres(session) else sqlite_insert
    page = (
        sa.select(SUBSCRIBER.c.id)
        .where(_recipients(themes), SUBSCRIBER.c.id > after)
        .order_by(SUBSCRIBER.c.id)
        .limit(POPULATE_CHUNK)
        .subquery()
    )
    upto, found = session.execute(sa.select(sa.func.max(page.c.id), sa.func.count())).one()
    if upto is None:
        return after, False
    rows = sa.select(
        sa.literal(update_id),
        SUBSCRIBER.c.id,
        sa.literal(DeliveryStatus.PENDING.value),
        sa.literal(0),
        sa.literal(now, DELIVERY.c.enqueued_at.type),
    ).where(_recipients(themes), SUBSCRIBER.c.id > after, SUBSCRIBER.c.id <= upto)
    session.execute(
        dialect_insert(DELIVERY)
        .from_select(["update_id", "subscriber_id", "status", "attempts", "enqueued_at"], rows)
        .on_conflict_do_nothing(index_elements=["update_id", "subscriber_id"])
    )
    return int(upto), int(found) == POPULATE_CHUNK


def analyze(session: Session) -> None:
    """Fresh planner statistics for the delivery rows just written (PostgreSQL; about 30 ms):
    the claims that follow are planned with them."""
    if is_postgres(session):
        session.execute(sa.text("ANALYZE delivery"))

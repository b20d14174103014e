"""Who receives an update: the one place that decides.

An update reaches each active subscriber who chose at least one of its themes, once: the
delivery rows are written by one INSERT ... SELECT per keyset page (rows never enter Python), and
the unique key (update, subscriber) makes writing them twice harmless.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session

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
    """How many would receive an update on these themes now (for the compose and send pages)."""
    query = sa.select(sa.func.count()).select_from(SUBSCRIBER).where(_recipients(themes))
    return int(session.execute(query).scalar_one())


def populate(session: Session, update_id: int, themes: Sequence[str], now: datetime) -> int:
    """One pending delivery per recipient, a keyset page at a time; returns how many there are."""
    dialect_insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    after = 0
    while True:
        page = (
            sa.select(SUBSCRIBER.c.id)
            .where(_recipients(themes), SUBSCRIBER.c.id > after)
            .order_by(SUBSCRIBER.c.id)
            .limit(POPULATE_CHUNK)
            .subquery()
        )
        upto = session.execute(sa.select(sa.func.max(page.c.id))).scalar_one()
        if upto is None:
            break
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
        after = int(upto)
    if session.get_bind().dialect.name == "postgresql":
        # Fresh statistics for the rows just written (about 30 ms for 100,000 rows): the claims
        # that follow are planned with them.
        session.execute(sa.text("ANALYZE delivery"))
    count = (
        sa.select(sa.func.count()).select_from(DELIVERY).where(DELIVERY.c.update_id == update_id)
    )
    return int(session.execute(count).scalar_one())

"""The counts the database keeps (migrations 0014, 0019, 0018 and 0020's triggers), read instead of
counting rows.

The subscriber and delivery tables grow with the history; a page or a scrape that counted them
would grow with it (4 s for an update's page at 16 million deliveries). These read a handful of
rows: `delivery_count` (an update's deliveries by status; summed over its shards),
`subscriber_count` (subscribers by status, theme "" for every subscriber once, and by theme and
status; summed over its shards),
`update_left_count` (who left after an update's copy reached them; summed over its shards) and
`reach_count` (who an update on some themes would reach, by set of themes; summed over shards).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlmodel import Session

from mailing.models import (
    DeliveryCount,
    ReachCount,
    SubscriberCount,
    ThemeBit,
    UpdateLeftCount,
    table_of,
)
from mailing.states import DELIVERED, DeliveryStatus, SubscriberStatus

DELIVERY_COUNT = table_of(DeliveryCount)
SUBSCRIBER_COUNT = table_of(SubscriberCount)
LEFT_COUNT = table_of(UpdateLeftCount)
REACH_COUNT = table_of(ReachCount)
THEME_BIT = table_of(ThemeBit)
EVERYONE = ""  # the theme of the rows that count every subscriber once


def deliveries_of(conn: Session | Connection, update_id: int) -> dict[DeliveryStatus, int]:
    """An update's deliveries by status (statuses with none are left out)."""
    rows = conn.execute(
        sa.select(DELIVERY_COUNT.c.status, sa.func.sum(DELIVERY_COUNT.c.n))
        .where(DELIVERY_COUNT.c.update_id == update_id)
        .group_by(DELIVERY_COUNT.c.status)
    ).all()
    return {DeliveryStatus(status): int(n) for status, n in rows if n}


def taken_and_failed(
    conn: Session | Connection, update_ids: Sequence[int]
) -> dict[int, tuple[int, int]]:
    """{update id: (copies the relay took, bounced and complained-about ones included; copies
    that failed)} for these updates, in one grouped read (the update's own `sent` and `failed`
    are written when its send finishes)."""
    if not update_ids:
        return {}
    c = DELIVERY_COUNT.c

    def summed(which: sa.ColumnElement[bool]) -> sa.ColumnElement[int]:
        return sa.func.coalesce(sa.func.sum(sa.case((which, c.n), else_=0)), 0)

    rows = conn.execute(
        sa.select(
            c.update_id,
            summed(c.status.in_([s.value for s in DELIVERED])),
            summed(c.status == DeliveryStatus.FAILED.value),
        )
        .where(c.update_id.in_(list(update_ids)))
        .group_by(c.update_id)
    ).all()
    found = {int(u): (int(taken), int(failed)) for u, taken, failed in rows}
    return {u: found.get(u, (0, 0)) for u in update_ids}


def left_after(conn: Session | Connection, update_id: int) -> int:
    """How many of the update's `sent` copies went to someone now unsubscribed, who left at or
    after the copy's sent_at (what the update's page counted with a join before 0019)."""
    found = conn.execute(
        sa.select(sa.func.sum(LEFT_COUNT.c.n)).where(LEFT_COUNT.c.update_id == update_id)
    ).scalar()
    return int(found or 0)


def deliveries_by_status(conn: Session | Connection) -> dict[str, int]:
    """Every update's deliveries by status (one row per update and status is read)."""
    rows = conn.execute(
        sa.select(DELIVERY_COUNT.c.status, sa.func.sum(DELIVERY_COUNT.c.n)).group_by(
            DELIVERY_COUNT.c.status
        )
    ).all()
    return {str(status): int(n or 0) for status, n in rows}


def subscribers(conn: Session | Connection) -> dict[tuple[str, str], int]:
    """{(theme, status): n}, theme "" counting every subscriber once."""
    rows = conn.execute(
        sa.select(
            SUBSCRIBER_COUNT.c.theme, SUBSCRIBER_COUNT.c.status, sa.func.sum(SUBSCRIBER_COUNT.c.n)
        ).group_by(SUBSCRIBER_COUNT.c.theme, SUBSCRIBER_COUNT.c.status)
    ).all()
    return {(str(theme), str(status)): int(n or 0) for theme, status, n in rows}


def subscribers_by_status(conn: Session | Connection) -> dict[str, int]:
    """Every status, zeros included."""
    counts = subscribers(conn)
    return {s.value: counts.get((EVERYONE, s.value), 0) for s in SubscriberStatus}


def reach(conn: Session | Connection, themes: Sequence[str]) -> dict[str, int]:
    """{frequency: how many active subscribers on it chose at least one of these themes} (the
    immediate ones are what sending/recipients.py's predicate selects), from reach_count: the
    sets of themes that meet the mask of these themes' bits (one statement; at most 31 sets a
    frequency and shard)."""
    mask = (
        sa.select(sa.func.coalesce(sa.func.sum(sa.literal(1).op("<<")(THEME_BIT.c.bit)), 0))
        .where(THEME_BIT.c.theme.in_(list(themes)))
        .scalar_subquery()
    )
    found = conn.execute(
        sa.select(REACH_COUNT.c.frequency, sa.func.sum(REACH_COUNT.c.n))
        .where(REACH_COUNT.c.bits.op("&")(mask) != 0)
        .group_by(REACH_COUNT.c.frequency)
    )
    return {str(frequency): int(n or 0) for frequency, n in found}

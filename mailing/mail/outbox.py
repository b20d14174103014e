"""The notice outbox: one row per one-off email owed to a subscriber, written in the same
transaction as the request that causes it (so a lost task never loses an email), claimed under a
row lock while it is sent, and deleted once the relay took it. A row names a subscriber id and a
kind, never an address; erasing a subscriber deletes their rows (ON DELETE CASCADE).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import NamedTuple

import sqlalchemy as sa
from sqlmodel import Session

from mailing.config import get_settings
from mailing.models import Notice, table_of, utcnow
from mailing.states import Frequency, NoticeKind

NOTICE = table_of(Notice)
_QUEUE = sa.insert(NOTICE).returning(NOTICE.c.id, sort_by_parameter_order=True)


class Owed(NamedTuple):
    """A notice to queue: `themes` and `frequency` are what a confirmation link will carry."""

    subscriber_id: int
    kind: NoticeKind
    themes: Sequence[str] = ()
    frequency: Frequency = Frequency.IMMEDIATE


def queue(
    session: Session,
    subscriber_id: int,
    kind: NoticeKind,
    themes: Sequence[str] = (),
    frequency: Frequency = Frequency.IMMEDIATE,
) -> int:
    """Add a notice in the caller's transaction; returns its id (publish it after the commit)."""
    return queue_many(session, [Owed(subscriber_id, kind, themes, frequency)])[0]


def queue_many(session: Session, owed: Sequence[Owed]) -> list[int]:
    """Add notices in one statement, in the caller's transaction; returns their ids, in order.
    Core, built once, on the session's connection: no ORM bulk path, no autoflush."""
    if not owed:
        return []
    now = utcnow()
    rows = session.connection().execute(
        _QUEUE,
        [
            {
                "subscriber_id": o.subscriber_id,
                "kind": o.kind.value,
                "themes": ",".join(o.themes),
                "frequency": o.frequency.value,
                "created_at": now,
                "enqueued_at": now,
                "attempts": 0,
            }
            for o in owed
        ],
    )
    return [int(notice_id) for notice_id in rows.scalars()]


def queue_staff(
    session: Session,
    staff_id: int,
    kind: NoticeKind,
    *,
    update_id: int | None = None,
    about_staff_id: int | None = None,
) -> int:
    """A notice owed to a staff member (not a subscriber), about an update or an account, in the
    caller's transaction; returns its id (publish it after the commit)."""
    now = utcnow()
    row = session.connection().execute(
        sa.insert(NOTICE).returning(NOTICE.c.id),
        {
            "staff_id": staff_id,
            "update_id": update_id,
            "about_staff_id": about_staff_id,
            "kind": kind.value,
            "themes": "",
            "frequency": Frequency.IMMEDIATE.value,
            "created_at": now,
            "enqueued_at": now,
            "attempts": 0,
        },
    )
    return int(row.scalar_one())


def claim(session: Session, notice_id: int) -> Notice | None:
    """The notice, locked for this transaction; None if it was sent already or another worker
    is sending it right now."""
    query = sa.select(Notice).where(NOTICE.c.id == notice_id)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    found = session.execute(query).scalars().first()
    return found


def done(session: Session, notice: Notice) -> None:
    session.execute(sa.delete(NOTICE).where(NOTICE.c.id == notice.id))


def redrive(session: Session, now: datetime, publish: Callable[[int], None]) -> int:
    """Publish again every notice queued longer ago than MAILING_NOTICE_REDRIVE_SECONDS."""
    before = now - timedelta(seconds=get_settings().notice_redrive_seconds)
    lost = [
        int(i)
        for i in session.execute(
            sa.select(NOTICE.c.id).where(NOTICE.c.enqueued_at < before).order_by(NOTICE.c.id)
        ).scalars()
    ]
    published = 0
    for notice_id in lost:
        session.execute(
            sa.update(NOTICE)
            .where(NOTICE.c.id == notice_id)
            .values(enqueued_at=now, attempts=NOTICE.c.attempts + 1)
        )
        session.commit()
        try:
            publish(notice_id)
        except Exception:  # the broker is down: the next run tries again
            break
        published += 1
    return published

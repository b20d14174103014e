"""Writing a send's delivery rows while it is being sent, so "send" answers at once.

The request that starts a send writes the first page of delivery rows (recipients.write_page,
up to POPULATE_CHUNK) and commits; the workers start sending those at once. When there may be
more, an `update_population` row keeps the keyset cursor (the last subscriber id written), and
`recipients` holds the count of who the send reaches at that moment. Each batch task that finds
the cursor open takes its lease (`lease_at`, renewed each page) and writes the next pages in a
thread beside its lanes, until its time is up; another task takes over a lease LEASE_SECONDS
old (a killed worker), so nothing is lost.

Exactness: a page commits only together with moving the cursor on from the value it started
at (a conditional UPDATE, or the DELETE of the row after the last page, in the same
transaction), so no page is written twice, and a cursor closed by a cancel makes the page being
written roll back. Once the cursor is closed (the last page, a cancel, an abandon),
`recipients` becomes the number of the update's delivery rows, read from the kept counts; the
finish sets it again (batch.finish_if_done), so the ledger is exact even if a writer died in
between. A send is not finished while its cursor is open.

Locks: a page's INSERT takes no lock a worker holds (the rows are new); at its end it holds the
update's kept-count rows and then the cursor row, never the update's row, which every settled
chunk takes before the kept counts. The recount after the last page is a transaction of its own.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlmodel import Session

from mailing.db import get_engine
from mailing.figures import kept_counts
from mailing.models import Update, UpdatePopulation, table_of, utcnow
from mailing.sending.recipients import analyze, count_recipients, write_page
from mailing.states import UpdateStatus

log = logging.getLogger(__name__)

UPDATE = table_of(Update)
POPULATION = table_of(UpdatePopulation)
LEASE_SECONDS = 30.0  # a writer silent this long is taken to be dead; another takes over


def _this(update_id: int) -> sa.ColumnElement[bool]:
    return POPULATION.c.update_id == update_id


def begin(session: Session, update_id: int, themes: Sequence[str], now: datetime) -> int:
    """In the transaction that starts the send: write the first page and return `recipients`
    (exact if that page was all of them; otherwise who the send reaches now, and the cursor
    stays open for the workers)."""
    upto, more = write_page(session, update_id, themes, now, 0)
    analyze(session)
    if not more:
        return recount(session, update_id)
    session.execute(sa.insert(POPULATION).values(update_id=update_id, after=upto, lease_at=None))
    recipients = count_recipients(session, themes)
    session.execute(UPDATE.update().where(UPDATE.c.id == update_id).values(recipients=recipients))
    return recipients


def total_rows(update_id: int) -> sa.ScalarSelect[int]:
    """The update's delivery rows, from the kept counts (for an UPDATE's values)."""
    counts = kept_counts.DELIVERY_COUNT
    return (
        sa.select(sa.func.coalesce(sa.func.sum(counts.c.n), 0))
        .where(counts.c.update_id == update_id)
        .scalar_subquery()
    )


def recount(session: Session | Connection, update_id: int) -> int:
    """Set `recipients` to the update's delivery rows (the kept counts) and return it. Call it
    once the cursor is closed."""
    session.execute(
        UPDATE.update().where(UPDATE.c.id == update_id).values(recipients=total_rows(update_id))
    )
    return int(
        session.execute(sa.select(UPDATE.c.recipients).where(UPDATE.c.id == update_id)).scalar()
        or 0
    )


def close(session: Session | Connection, update_id: int) -> bool:
    """Close an open cursor (a cancel or an abandon, after its status change) and make
    `recipients` exact; False if it was already closed. The caller commits."""
    closed = session.execute(sa.delete(POPULATION).where(_this(update_id)))
    if not getattr(closed, "rowcount", 0):
        return False
    recount(session, update_id)
    return True


def is_open(session: Session | Connection, update_id: int) -> bool:
    query = sa.select(POPULATION.c.after).where(_this(update_id))
    return session.execute(query).scalar() is not None


def still_writing(update_id: int) -> sa.ColumnElement[bool]:
    """For a WHERE: the update's delivery rows are still being written."""
    return sa.exists().where(_this(update_id))


def _take_lease(session: Session, update_id: int, now: datetime) -> bool:
    stale = now - timedelta(seconds=LEASE_SECONDS)
    sending = sa.exists().where(
        UPDATE.c.id == update_id, UPDATE.c.status == UpdateStatus.SENDING.value
    )
    taken = session.execute(
        POPULATION.update()
        .where(
            _this(update_id),
            sending,
            sa.or_(POPULATION.c.lease_at.is_(None), POPULATION.c.lease_at < stale),
        )
        .values(lease_at=now)
    )
    session.commit()
    return bool(getattr(taken, "rowcount", 0))


def write_next_page(session: Session, update_id: int, themes: Sequence[str]) -> bool:
    """Write one page and move the cursor on, in one transaction; True if more may follow.
    False when the cursor closed (every row written), the send stopped or someone else moved
    the cursor first (this page then rolls back)."""
    row = session.execute(
        sa.select(POPULATION.c.after, UPDATE.c.status, UPDATE.c.send_started_at)
        .join(UPDATE, UPDATE.c.id == POPULATION.c.update_id)
        .where(_this(update_id))
    ).one_or_none()
    if row is None or row.status != UpdateStatus.SENDING.value:
        session.rollback()
        return False
    after = int(row.after)
    upto, more = write_page(session, update_id, themes, row.send_started_at or utcnow(), after)
    mine = sa.and_(_this(update_id), POPULATION.c.after == after)
    if more:
        moved = session.execute(
            POPULATION.update().where(mine).values(after=upto, lease_at=utcnow())
        )
    else:
        moved = session.execute(sa.delete(POPULATION).where(mine))
    if not getattr(moved, "rowcount", 0):
        session.rollback()  # cancelled or taken over meanwhile: this page is not ours
        return False
    session.commit()
    if not more:
        # A transaction of its own: the update's row is taken after no kept-count row is held,
        # the order a settling chunk takes them in.
        recount(session, update_id)
        analyze(session)
        session.commit()
        log.info("update %s: every delivery row written", update_id)
    return more


class Writer:
    """Writes an update's remaining pages in a thread beside the lanes, until `deadline`."""

    def __init__(self, update_id: int, themes: Sequence[str], deadline: float) -> None:
        self.update_id = update_id
        self.themes = list(themes)
        self.deadline = deadline
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"populate-{update_id}")

    @classmethod
    def start_if_needed(
        cls, update_id: int, themes: Sequence[str], deadline: float
    ) -> Writer | None:
        """A running writer if the cursor is open and this task took its lease, else None."""
        with Session(get_engine()) as session:
            if not _take_lease(session, update_id, utcnow()):
                return None
        writer = cls(update_id, themes, deadline)
        writer._thread.start()
        return writer

    def _run(self) -> None:
        try:
            with Session(get_engine()) as session:
                while write_next_page(session, self.update_id, self.themes):
                    if time.monotonic() >= self.deadline:
                        break
                # Hand the lease back at once, so the next task carries on without waiting.
                session.execute(
                    POPULATION.update().where(_this(self.update_id)).values(lease_at=None)
                )
                session.commit()
        except Exception as exc:  # the next task (or the lease running out) carries on
            self.error = exc
            log.warning("update %s: writing delivery rows stopped: %s", self.update_id, exc)

    def join(self) -> None:
        self._thread.join()

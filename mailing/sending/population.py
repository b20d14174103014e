"""Writing a send's delivery rows while it is being sent, so "send" answers at once.

The request that starts a send writes the first page of delivery rows (recipients.write_page,
up to POPULATE_CHUNK) and commits; the workers start sending those at once. When there may be
more, the update keeps a keyset cursor, `populate_after` (the last subscriber id written), and
`recipients` holds the count of who it reaches at that moment. Each batch task that finds the
cursor open takes a lease on it (`populate_lease_at`, renewed each page) and writes the next
pages in a thread beside its lanes, until its time is up; another task takes over a lease that
is LEASE_SECONDS old (a killed worker), so nothing is lost.

Exactness: a page commits only together with moving the cursor on from the value it started
at (a conditional UPDATE in the same transaction), so no page is counted twice, and a cursor
closed by a cancel makes the page being written roll back. When the cursor closes (the last
page, a cancel, an abandon), `recipients` becomes the number of the update's delivery rows, read
from the kept counts after the close: the ledger is exact. A send is not finished while its
cursor is open (batch.finish_if_done).

Lock order: a page's INSERT takes no lock a worker holds (the rows are new); its kept-count
rows and then the update row are taken at the end, the order a settling chunk takes them.
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
from mailing.models import Update, table_of, utcnow
from mailing.sending.recipients import analyze, count_recipients, write_page
from mailing.states import UpdateStatus

log = logging.getLogger(__name__)

UPDATE = table_of(Update)
LEASE_SECONDS = 30.0  # a writer silent this long is taken to be dead; another takes over
CLOSED: dict[str, object] = {"populate_after": None, "populate_lease_at": None}


def begin(session: Session, update_id: int, themes: Sequence[str], now: datetime) -> int:
    """In the transaction that starts the send: write the first page and return `recipients`
    (exact if that page was all of them; otherwise who the send reaches now, and the cursor
    stays open for the workers)."""
    upto, more = write_page(session, update_id, themes, now, 0)
    analyze(session)
    if not more:
        return recount(session, update_id)
    recipients = count_recipients(session, themes)
    session.execute(
        UPDATE.update()
        .where(UPDATE.c.id == update_id)
        .values(populate_after=upto, populate_lease_at=None, recipients=recipients)
    )
    return recipients


def recount(session: Session | Connection, update_id: int) -> int:
    """Set `recipients` to the update's delivery rows (the kept counts) and return it. Call it
    after the cursor is closed, in the same transaction."""
    total = sum(kept_counts.deliveries_of(session, update_id).values())
    session.execute(UPDATE.update().where(UPDATE.c.id == update_id).values(recipients=total))
    return total


def close(session: Session, update_id: int) -> bool:
    """Close an open cursor (a cancel or an abandon, after its status change) and make
    `recipients` exact; False if it was already closed. The caller commits."""
    closed = session.execute(
        UPDATE.update()
        .where(UPDATE.c.id == update_id, UPDATE.c.populate_after.is_not(None))
        .values(CLOSED)
    )
    if not getattr(closed, "rowcount", 0):
        return False
    recount(session, update_id)
    return True


def is_open(session: Session, update_id: int) -> bool:
    query = sa.select(UPDATE.c.populate_after).where(UPDATE.c.id == update_id)
    return session.execute(query).scalar() is not None


def _take_lease(session: Session, update_id: int, now: datetime) -> bool:
    stale = now - timedelta(seconds=LEASE_SECONDS)
    taken = session.execute(
        UPDATE.update()
        .where(
            UPDATE.c.id == update_id,
            UPDATE.c.status == UpdateStatus.SENDING.value,
            UPDATE.c.populate_after.is_not(None),
            sa.or_(UPDATE.c.populate_lease_at.is_(None), UPDATE.c.populate_lease_at < stale),
        )
        .values(populate_lease_at=now)
    )
    session.commit()
    return bool(getattr(taken, "rowcount", 0))


def write_next_page(session: Session, update_id: int, themes: Sequence[str]) -> bool:
    """Write one page and move the cursor on, in one transaction; True if more may follow.
    False when the cursor closed (every row written), the send stopped or someone else moved
    the cursor first (this page then rolls back)."""
    row = session.execute(
        sa.select(UPDATE.c.populate_after, UPDATE.c.status, UPDATE.c.send_started_at).where(
            UPDATE.c.id == update_id
        )
    ).one_or_none()
    if row is None or row.populate_after is None or row.status != UpdateStatus.SENDING.value:
        session.rollback()
        return False
    after = int(row.populate_after)
    upto, more = write_page(session, update_id, themes, row.send_started_at or utcnow(), after)
    values = {"populate_after": upto, "populate_lease_at": utcnow()} if more else CLOSED
    moved = session.execute(
        UPDATE.update()
        .where(
            UPDATE.c.id == update_id,
            UPDATE.c.populate_after == after,
            UPDATE.c.status == UpdateStatus.SENDING.value,
        )
        .values(values)
    )
    if not getattr(moved, "rowcount", 0):
        session.rollback()  # cancelled, paused or taken over meanwhile: this page is not ours
        return False
    if not more:
        recount(session, update_id)
        analyze(session)
    session.commit()
    if not more:
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
                    UPDATE.update()
                    .where(UPDATE.c.id == self.update_id)
                    .values(populate_lease_at=None)
                )
                session.commit()
        except Exception as exc:  # the next task (or the lease running out) carries on
            self.error = exc
            log.warning("update %s: writing delivery rows stopped: %s", self.update_id, exc)

    def join(self) -> None:
        self._thread.join()

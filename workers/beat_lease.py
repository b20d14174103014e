"""Many beats, each job once per period: before a beat publishes a housekeeping job it claims
the job's current period in `beat_lease` with one conditional upsert; only the beat whose
statement moved the period on publishes, every other beat skips that period.

A period is the job's interval counted from the Unix epoch, so beats on different hosts agree on
it without talking to each other (clocks kept by NTP; a skew of a second or two at a boundary
can at worst run a job twice, which every job tolerates: each is idempotent). With no database,
nothing is claimed and nothing published: every job needs the database anyway.
"""

from __future__ import annotations

import logging
import os
import socket
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from celery.beat import ScheduleEntry, Scheduler
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine

from mailing.db import get_engine
from mailing.models import BeatLease, table_of, utcnow

log = logging.getLogger(__name__)

LEASE = table_of(BeatLease)


def holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"[:120]


def period_of(now: datetime, interval_seconds: float) -> int:
    return int(now.timestamp() // max(interval_seconds, 0.001))


def claim(engine: Engine, job: str, period: int, who: str, now: datetime) -> bool:
    """True if this caller is the first to claim `job` for `period` (later periods only)."""
    insert = pg_insert if engine.dialect.name == "postgresql" else sqlite_insert
    values = insert(LEASE).values(job=job, period=period, holder=who, claimed_at=now)
    statement = values.on_conflict_do_update(
        index_elements=[LEASE.c.job],
        set_={"period": period, "holder": who, "claimed_at": now},
        where=LEASE.c.period < period,
    ).returning(LEASE.c.job)  # an insert's rowcount is not reliable; a returned row is
    with engine.begin() as conn:
        return conn.execute(statement).first() is not None


def _interval(entry: ScheduleEntry) -> float:
    run_every = getattr(entry.schedule, "run_every", None)
    return run_every.total_seconds() if run_every is not None else 60.0


class LeasedScheduler(Scheduler):  # type: ignore[misc]
    """Celery's in-memory scheduler, publishing an entry only when its period's lease is won.
    Nothing is kept on disk: the lease table is the schedule's memory across restarts, so every
    entry is due at start and the lease says whether its period has already run."""

    def setup_schedule(self) -> None:
        super().setup_schedule()
        for entry in self.schedule.values():
            entry.last_run_at = entry.last_run_at - timedelta(days=30)

    def apply_entry(self, entry: ScheduleEntry, producer: Any = None) -> None:
        now = utcnow()
        try:
            won = claim(get_engine(), entry.name, period_of(now, _interval(entry)), holder(), now)
        except sa.exc.SQLAlchemyError as exc:
            log.warning("beat: %s not run: the database is unavailable (%s)", entry.name, exc)
            return
        if not won:
            log.info("beat: %s already run this period by another beat", entry.name)
            return
        super().apply_entry(entry, producer=producer)

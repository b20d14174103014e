"""Sending the weekly summaries that mailing/sending/digests.py planned, exactly once each.

The `weekly_digest` rows are the truth, the broker only a notification, as for updates
(batch.py). `deliver_batch` runs them through the one mail pipeline (mailing/mail/pipeline.py):
the claim locks pending rows (PostgreSQL `FOR UPDATE SKIP LOCKED`, plus a share lock on the
subscriber row; on SQLite the one write lock) and re-reads each subscriber in that transaction,
and the settle marks the rows in the same transaction. So an unsubscribe or erasure either
commits first (the summary is cancelled, never sent) or waits for the chunk; a worker killed
mid-chunk loses its transaction and at most that chunk is sent again. A summary the relay defers
(4xx) or that meets an unreachable relay waits `backoff_seconds` (retry_at), as a delivery does;
the batch task publishes itself again for the earliest retry.
`run` (beat, every reconcile interval) plans a due week and re-drives rows whose task was lost:
pending rows handed out more than MAILING_SEND_STALL_SECONDS ago are handed out again once no
summary has been sent for that long (a duplicate task finds them sent or locked and does
nothing); while summaries are going out, only rows handed out over REDRIVE_AFTER ago are.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlmodel import Session

from mailing.config import get_settings
from mailing.db import get_engine
from mailing.deliverability.returnpath import for_notice
from mailing.mail import pipeline
from mailing.mail.builder import Prepared, recipient_values
from mailing.models import Subscriber, WeeklyDigest, table_of, utcnow
from mailing.sending import digests
from mailing.states import DigestStatus, DigestTransitions, Frequency, SubscriberStatus, transition
from mailing.subscribers import links
from mailing.subscribers.tokens import Purpose

log = logging.getLogger(__name__)

Publish = Callable[[int, int], None]  # (first_digest_id, last_digest_id)
TABLE = table_of(WeeklyDigest)
SUBSCRIBER = table_of(Subscriber)
# Even while other summaries are going out, a batch not done this long after it was handed out
# is taken to be lost (the whole week's summaries take a few minutes).
REDRIVE_AFTER = timedelta(minutes=5)


# --- Handing rows to workers --------------------------------------------------------------------


def dispatch(session: Session, publish: Publish, now: datetime, stale_before: datetime) -> int:
    """Enqueue pending summaries never enqueued, or enqueued before `stale_before`; commits as
    it goes. Returns tasks enqueued."""
    batch = max(1, get_settings().send_batch_size)
    pending = sa.and_(
        TABLE.c.status == DigestStatus.PENDING.value,
        sa.or_(TABLE.c.enqueued_at.is_(None), TABLE.c.enqueued_at < stale_before),
    )
    after, tasks = 0, 0
    while True:
        ids = list(
            session.execute(
                sa.select(TABLE.c.id)
                .where(pending, TABLE.c.id > after)
                .order_by(TABLE.c.id)
                .limit(batch)
            ).scalars()
        )
        if not ids:
            return tasks
        first, last = int(ids[0]), int(ids[-1])
        session.execute(
            sa.update(TABLE).where(pending, TABLE.c.id.between(first, last)).values(enqueued_at=now)
        )
        session.commit()
        publish(first, last)
        tasks += 1
        after = last


def run(session: Session, now: datetime, publish: Publish) -> int:
    """Beat's job: plan the due week (once), then enqueue whatever is pending and not in hand.

    Rows handed out before are handed out again only when no summary at all has been sent for
    MAILING_SEND_STALL_SECONDS (as for updates, mailing/sending/reconcile.py): while a worker
    makes progress, queued batches are only waiting their turn.
    """
    digests.plan(session, now)
    session.commit()
    quiet_since = now - timedelta(seconds=get_settings().send_stall_seconds)
    latest = session.execute(sa.select(sa.func.max(TABLE.c.sent_at))).scalar()
    stale_before = quiet_since if latest is None or latest < quiet_since else now - REDRIVE_AFTER
    return dispatch(session, publish, now, stale_before)


# --- Sending a batch ---------------------------------------------------------------------------


class _Row(NamedTuple):
    digest_id: int
    subscriber_id: int
    week: str
    update_ids: str
    status: str
    frequency: str
    email: str
    email_key: str
    token_version: int
    attempts: int


class _Who(NamedTuple):
    """A subscribers.LinkSubject made from a claimed row."""

    id: int
    token_version: int
    email_key: str


_FIRST = sa.bindparam("first_id", type_=sa.Integer)
_LAST = sa.bindparam("last_id", type_=sa.Integer)
_DUE_AT = sa.bindparam("due_at", type_=TABLE.c.retry_at.type)
_LIMIT = sa.bindparam("chunk_size", type_=sa.Integer)
_CLAIMABLE = sa.and_(
    TABLE.c.id.between(_FIRST, _LAST),
    TABLE.c.status == DigestStatus.PENDING.value,
    sa.or_(TABLE.c.retry_at.is_(None), TABLE.c.retry_at <= _DUE_AT),
)
_CLAIMED = (
    sa.select(
        TABLE.c.id,
        TABLE.c.subscriber_id,
        TABLE.c.week,
        TABLE.c.update_ids,
        SUBSCRIBER.c.status,
        SUBSCRIBER.c.frequency,
        SUBSCRIBER.c.email,
        SUBSCRIBER.c.email_key,
        SUBSCRIBER.c.token_version,
        TABLE.c.attempts,
    )
    .join_from(TABLE, SUBSCRIBER, SUBSCRIBER.c.id == TABLE.c.subscriber_id)
    .where(_CLAIMABLE)
    .order_by(TABLE.c.id)
    .limit(_LIMIT)
)
# The share lock on the subscriber makes an unsubscribe or erasure wait for this chunk (two
# lock strengths in one statement, which with_for_update cannot spell).
_CLAIM_POSTGRES = _CLAIMED.suffix_with(
    "FOR UPDATE OF weekly_digest SKIP LOCKED FOR SHARE OF subscriber"
)
# SQLite has one writer: writing first holds the database's write lock until commit.
_LOCK_CLAIMABLE = (
    sa.update(TABLE)
    .where(
        TABLE.c.id.in_(sa.select(TABLE.c.id).where(_CLAIMABLE).order_by(TABLE.c.id).limit(_LIMIT))
    )
    .values(attempts=TABLE.c.attempts)
)


def _claim(conn: Connection, first: int, last: int, limit: int, now: Any = None) -> list[_Row]:
    params = {"first_id": first, "last_id": last, "chunk_size": limit, "due_at": now or utcnow()}
    if conn.dialect.name == "postgresql":
        return [_Row._make(r) for r in conn.execute(_CLAIM_POSTGRES, params).all()]
    conn.execute(_LOCK_CLAIMABLE, params)
    return [_Row._make(r) for r in conn.execute(_CLAIMED, params).all()]


@dataclass
class Outcome:
    sent: int = 0
    failed: int = 0
    cancelled: int = 0
    deferred: bool = False  # some are waiting for a retry (the relay deferred them or was down)
    retry_in: float | None = None  # the earliest of them is due in this many seconds


class _Summaries:
    """A range of pending weekly summaries as a source of the mail pipeline."""

    rated = True  # MAILING_SEND_RATE covers summaries and updates alike

    def __init__(self, first_id: int, last_id: int) -> None:
        self.first_id, self.last_id = first_id, last_id
        self.built: dict[tuple[str, str], Prepared | None] = {}
        self.clock = pipeline.ClaimClock()

    def still_going(self, conn: Connection) -> bool:
        return True

    def claim(self, conn: Connection, limit: int) -> list[_Row]:
        return _claim(conn, self.first_id, self.last_id, limit, self.clock.mark())

    def copy(self, row: _Row) -> pipeline.Copy | None:
        prepared = self._prepared(row)
        if prepared is None:
            return None
        who = _Who(row.subscriber_id, row.token_version, row.email_key)
        values = recipient_values(
            row.email,
            links.token_for(Purpose.UNSUBSCRIBE, who),
            links.token_for(Purpose.MANAGE, who),
        )
        sender = for_notice(prepared.envelope_from, row.subscriber_id)
        return pipeline.Copy(sender, row.email, prepared.personalise(values))

    def _prepared(self, row: _Row) -> Prepared | None:
        if row.status != SubscriberStatus.ACTIVE or row.frequency != Frequency.WEEKLY:
            return None
        key = (row.week, row.update_ids)  # at most one per combination of themes each week
        if key not in self.built:
            with Session(get_engine()) as session:
                self.built[key] = digests.prepare_digest(session, row.week, row.update_ids)
        return self.built[key]

    def settle(self, conn: Connection, settled: pipeline.Settled[_Row]) -> None:
        _settle(conn, settled)

    def committed(self, settled: pipeline.Settled[Any]) -> None:
        """Nothing to do once the chunk is committed."""


def deliver_batch(first_id: int, last_id: int) -> Outcome:
    """Send the pending summaries with ids in [first_id, last_id], a commit chunk at a time.

    One no longer due (unsubscribed, erased, back to each update, or listing nothing still
    published) is cancelled; a 5xx fails one; a 4xx or a lost relay leaves it pending until its
    retry time (`retry_in` says when the first is due).
    """
    source = _Summaries(first_id, last_id)
    done = pipeline.run(source)
    outcome = Outcome(done.sent, done.failed, done.cancelled)
    with get_engine().connect() as conn:
        due = conn.execute(
            sa.select(sa.func.min(TABLE.c.retry_at)).where(
                TABLE.c.id.between(first_id, last_id),
                TABLE.c.status == DigestStatus.PENDING.value,
                TABLE.c.retry_at > source.clock.earliest(),
            )
        ).scalar()
    if due is not None:
        now = utcnow()
        due = due if due.tzinfo else due.replace(tzinfo=now.tzinfo)
        outcome.deferred = True
        outcome.retry_in = max(0.0, float((due - now).total_seconds()))
    return outcome


def _settle(conn: Connection, result: pipeline.Settled[_Row]) -> None:
    """The update path's settle, for summaries: sent, failed with the relay's code, cancelled,
    or pending again after a backoff (given up after MAILING_SEND_MAX_RETRIES deferrals)."""
    now = utcnow()
    ids = TABLE.c.id.in_
    counted: dict[str, Any] = {"attempts": TABLE.c.attempts + 1}
    if result.sent:
        sent = [r.digest_id for r in result.sent]
        transition(conn, TABLE, DigestTransitions.SEND, ids(sent), {**counted, "sent_at": now})
    for row, failure in result.failed:
        transition(
            conn,
            TABLE,
            DigestTransitions.FAIL,
            TABLE.c.id == row.digest_id,
            {**counted, "error": str(failure)[:200]},
        )
    if result.cancelled:
        transition(
            conn, TABLE, DigestTransitions.CANCEL, ids([r.digest_id for r in result.cancelled])
        )
    retried, deferred, due = result.retries(lambda r: r.attempts)
    if retried:
        retry = ids([r.digest_id for r in retried])
        conn.execute(sa.update(TABLE).where(retry).values(**counted, retry_at=due))
    if deferred:
        # One the relay keeps deferring is given up on, as update deliveries are.
        limit = get_settings().send_max_retries
        transition(
            conn,
            TABLE,
            DigestTransitions.FAIL,
            sa.and_(ids([r.digest_id for r in deferred]), TABLE.c.attempts >= limit),
            {"error": f"deferred {limit} times"},
        )

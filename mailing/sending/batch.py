"""Sending an update's deliveries: claim a chunk under row locks, send it, mark what went.

The database is the source of truth and the broker only a notification. A batch task claims an
update's pending deliveries a commit chunk at a time (PostgreSQL `FOR UPDATE SKIP LOCKED`; on
SQLite the one write lock), sends them through the one mail pipeline (mailing/mail/pipeline.py)
and marks them in the same transaction. Because the locks are held while a chunk is sent, an
unsubscribe (which cancels pending deliveries in its own transaction) either waits for the
chunk or cancels it: a mail is never sent after it. A worker killed mid-chunk loses its
transaction and its locks with its connection, so those rows are pending again at once: at most
one chunk per killed process is sent twice, and nothing is lost. The update's status is read
before every chunk, so a pause or a cancel lets each worker finish at most the chunk it holds.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlmodel import Session

import mailing.sending.chunk_sql as sql
import mailing.sending.guard as guard
import mailing.sending.population as population
from mailing.config import get_settings
from mailing.db import get_engine
from mailing.deliverability.returnpath import for_delivery
from mailing.mail import pipeline
from mailing.mail.builder import Prepared, recipient_values
from mailing.mail.pipeline import backoff_seconds as backoff_seconds
from mailing.models import Update, table_of, utcnow
from mailing.sending.recipients import DELIVERY
from mailing.states import (
    DELIVERED,
    DeliveryStatus,
    DeliveryTransitions,
    SubscriberStatus,
    UpdateStatus,
    UpdateTransitions,
    transition,
)
from mailing.subscribers import links
from mailing.updates import drafts
from mailing.updates import email as update_email

log = logging.getLogger(__name__)

UPDATE = table_of(Update)


@dataclass
class BatchOutcome:
    sent: int = 0
    failed: int = 0
    cancelled: int = 0
    deferred: bool = False  # the relay was unreachable: try again after a backoff
    more: bool = False  # the time budget ran out with work left: continue in a new task
    stopped: bool = False  # the update is no longer sending (paused, cancelled, abandoned)
    retry_in: float | None = None  # deferred deliveries are due again in this many seconds


POPULATE_POLL_SECONDS = 2.0  # another task is writing the rows: look again this soon


@dataclass(frozen=True)
class _Row:
    delivery_id: int
    subscriber_id: int
    status: str
    email: str
    email_key: str
    token_version: int
    attempts: int


def _still_sending(conn: Connection, update_id: int) -> bool:
    status = conn.execute(sql.STATUS, {"the_update": update_id}).scalar()
    return status == UpdateStatus.SENDING.value


def _claim(conn: Connection, update_id: int, limit: int, now: Any, after: int = 0) -> list[_Row]:
    """Lock up to `limit` pending deliveries of the update, due at `now`, for this transaction
    (PostgreSQL: FOR UPDATE SKIP LOCKED, in one statement that also answers nothing unless the
    update is still sending, with ids above `after` only; SQLite: its one write lock, taken by
    writing first, so no unsubscribe can commit while this chunk is being sent)."""
    params = {"the_update": update_id, "due_at": now, "chunk_size": limit}
    if conn.dialect.name == "postgresql":
        rows = conn.execute(sql.CLAIM_POSTGRES, {**params, "after_id": after}).all()
        return [_Row(*r) for r in rows]
    conn.execute(sql.LOCK_CLAIMABLE, params)
    return [_Row(*r) for r in conn.execute(sql.CLAIM_SQLITE, params).all()]


class _Frontier:
    """The highest delivery id this process's lanes claimed, per update: a lane's claim starts
    past it, so it does not walk the rows the other lanes hold. Only a hint: when nothing is
    left past it, the claim starts from the first row again (rows released below it, by a
    killed worker or a 4xx come due, are sent then)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._at: dict[int, int] = {}

    def get(self, update_id: int) -> int:
        return self._at.get(update_id, 0)

    def advance(self, update_id: int, rows: list[_Row]) -> None:
        if rows:
            with self._lock:
                last = max(row.delivery_id for row in rows)
                self._at[update_id] = max(self._at.get(update_id, 0), last)

    def restart(self, update_id: int) -> None:
        with self._lock:
            self._at.pop(update_id, None)


FRONTIER = _Frontier()


@dataclass(frozen=True)
class _LinkSubject:
    """A subscribers.LinkSubject from a claimed row, without building an ORM object for every
    recipient."""

    id: int
    token_version: int
    email_key: str


def _tokens(row: _Row) -> tuple[str, str]:
    return links.mail_tokens(_LinkSubject(row.subscriber_id, row.token_version, row.email_key))


class _Deliveries:
    """The update's pending deliveries as a source of the mail pipeline."""

    rated = True

    def __init__(self, update_id: int, prepared: Prepared) -> None:
        self.update_id = update_id
        self.prepared = prepared
        self.max_attempts = get_settings().send_max_retries
        self.clock = pipeline.ClaimClock()

        self.postgres = get_engine().dialect.name == "postgresql"
        self._figures = threading.local()  # what a lane's last settle answered, for the guard
        self._beat_at = 0.0  # time.monotonic() of the last heartbeat written

    def still_going(self, conn: Connection) -> bool:
        # On PostgreSQL the claim itself answers nothing once the update stopped sending.
        return self.postgres or _still_sending(conn, self.update_id)

    def claim(self, conn: Connection, limit: int) -> list[_Row] | None:
        now = self.clock.mark()
        if not self.postgres:
            return _claim(conn, self.update_id, limit, now)
        after = FRONTIER.get(self.update_id)
        rows = _claim(conn, self.update_id, limit, now, after)
        if not rows and after:
            FRONTIER.restart(self.update_id)
            rows = _claim(conn, self.update_id, limit, now)
        if not rows and not _still_sending(conn, self.update_id):
            return None  # paused, cancelled or abandoned
        FRONTIER.advance(self.update_id, rows)
        return rows

    def copy(self, row: _Row) -> pipeline.Copy | None:
        if row.status != SubscriberStatus.ACTIVE:
            return None
        unsubscribe_token, manage_token = _tokens(row)
        values = recipient_values(row.email, unsubscribe_token, manage_token)
        sender = for_delivery(self.prepared.envelope_from, row.delivery_id, row.subscriber_id)
        return pipeline.Copy(sender, row.email, self.prepared.personalise(values))

    def settle(self, conn: Connection, settled: pipeline.Settled[_Row]) -> None:
        # One lane of the task writes the heartbeat every HEARTBEAT_SECONDS (SQLite: each chunk).
        now = time.monotonic()
        beat = not self.postgres or now - self._beat_at >= sql.HEARTBEAT_SECONDS
        if beat:
            self._beat_at = now
        self._figures.last = _settle(conn, self.update_id, settled, self.max_attempts, beat)

    def committed(self, settled: pipeline.Settled[_Row]) -> None:
        # The send guard: a send whose copies the relay refuses or that bounce pauses itself.
        figures, self._figures.last = getattr(self._figures, "last", None), None
        guard.after_chunk(self.update_id, [row.delivery_id for row, _ in settled.failed], figures)


def deliver_batch(update_id: int, *, budget_seconds: float | None = None) -> BatchOutcome:
    """Send the update's ready pending deliveries, a commit chunk at a time, for up to
    `budget_seconds` (then `more` is set and the caller continues in a fresh task).

    Deliveries whose subscriber is no longer active are cancelled; a 5xx marks one failed; a
    4xx leaves it pending until its retry time; a lost relay stops the batch with `deferred` set.
    Any number of batches may run at once on the same update.
    """
    settings = get_settings()
    budget = settings.send_task_seconds if budget_seconds is None else budget_seconds
    deadline = time.monotonic() + budget
    outcome = BatchOutcome()
    with Session(get_engine(), expire_on_commit=False) as session:
        update = session.get(Update, update_id)
        if update is None or update.status != UpdateStatus.SENDING:
            outcome.stopped = True
            return outcome
        try:
            prepared = update_email.prepared_for(update)
        except update_email.CannotBuild as exc:
            abandon(session, update_id, str(exc))
            session.commit()
            outcome.stopped = True
            return outcome
        writing = population.is_open(session, update_id)
    source = _Deliveries(update_id, prepared)
    # Rows still to write: one task at a time writes the next pages beside its lanes.
    writer = (
        population.Writer.start_if_needed(update_id, drafts.themes_of(update), deadline)
        if writing
        else None
    )
    done = pipeline.run(source, deadline=deadline)
    if writer is not None:
        writer.join()
    outcome.sent, outcome.failed, outcome.cancelled = done.sent, done.failed, done.cancelled
    outcome.deferred, outcome.more, outcome.stopped = done.unreachable, done.more, done.stopped
    if outcome.more or outcome.stopped:
        return outcome
    with Session(get_engine(), expire_on_commit=False) as session, session.begin():
        if writing and population.is_open(session, update_id):
            # More rows are coming: straight on if this task wrote them, else look again soon
            # (the writer's lease runs out if it died).
            outcome.more = writer is not None
            outcome.retry_in = None if writer is not None else POPULATE_POLL_SECONDS
        elif not finish_if_done(session, update_id):
            outcome.retry_in = _next_retry_in(session, update_id, source.clock.earliest())
    return outcome


def _next_retry_in(session: Session, update_id: int, claimed_at: Any) -> float | None:
    """Seconds until the earliest deferred delivery the last claim (at `claimed_at`) could not
    take is due (0 if it is due already; None: nothing is waiting, whatever is still pending is
    being sent by another batch). Counting from the claim's instant, not from now, keeps a
    delivery that fell due in between from being left with no batch to send it."""
    now = utcnow()
    # Rows another batch holds right now are skipped: theirs to settle.
    earliest = (
        sa.select(DELIVERY.c.retry_at)
        .where(
            DELIVERY.c.update_id == update_id,
            DELIVERY.c.status == DeliveryStatus.PENDING.value,
            DELIVERY.c.retry_at > claimed_at,
        )
        .order_by(DELIVERY.c.retry_at)
        .limit(1)
    )
    if session.get_bind().dialect.name == "postgresql":
        earliest = earliest.with_for_update(skip_locked=True)
    due = session.execute(earliest).scalar()
    if due is None:
        return None
    if due.tzinfo is None:
        due = due.replace(tzinfo=now.tzinfo)
    return max(0.0, float((due - now).total_seconds()))


def _settle(
    conn: Connection,
    update_id: int,
    result: pipeline.Settled[_Row],
    max_attempts: int,
    beat: bool = True,
) -> tuple[str, guard.Figures] | None:
    """Mark the chunk's rows (the kept counts follow by trigger) and, if `beat`, the update's
    heartbeat; on PostgreSQL, returns the update's status and guard figures after this chunk
    (the rare cancels, failures and retries first, then the sent marks and the figures in one
    statement). Only the heartbeat writes the update's row, so chunks settling at once never
    queue on it."""
    now = utcnow()
    attempt = DELIVERY.c.attempts + 1
    postgres = conn.dialect.name == "postgresql"
    chunk_ids = sql.CHUNK_IDS[postgres]
    sent = [r.delivery_id for r in result.sent]
    if sent and not postgres:
        conn.execute(sql.MARK_SENT[postgres], {"chunk_ids": sent, "settled_at": now})
    if result.cancelled:
        transition(
            conn,
            DELIVERY,
            DeliveryTransitions.CANCEL,
            chunk_ids,
            params={"chunk_ids": [r.delivery_id for r in result.cancelled]},
        )
    for row, failure in result.failed:
        transition(
            conn,
            DELIVERY,
            DeliveryTransitions.FAIL,
            DELIVERY.c.id == row.delivery_id,
            {"error": str(failure)[:200], "attempts": attempt},
        )
    retried, deferred, due = result.retries(lambda r: r.attempts)
    if retried:
        # Both stay pending until their retry time, the attempt counted.
        conn.execute(
            sa.update(DELIVERY).where(chunk_ids).values(attempts=attempt, retry_at=due),
            {"chunk_ids": [r.delivery_id for r in retried]},
        )
    if deferred:
        # One the relay keeps deferring is given up.
        transition(
            conn,
            DELIVERY,
            DeliveryTransitions.FAIL,
            sa.and_(chunk_ids, DELIVERY.c.attempts >= max_attempts),
            {"error": f"deferred {max_attempts} times"},
            params={"chunk_ids": [r.delivery_id for r in deferred]},
        )
    if beat:
        conn.execute(sql.HEARTBEAT, {"the_update": update_id, "settled_at": now})
    if postgres:
        params = {"the_update": update_id, "chunk_ids": sent, "settled_at": now}
        after = conn.execute(sql.SETTLE_POSTGRES, params).one()
        taken, failed_so_far, bounced = (int(after[i]) for i in (1, 2, 3))
        return str(after[0]), guard.Figures(taken + failed_so_far, failed_so_far, bounced)
    return None


def _count(update_id: int, statuses: frozenset[DeliveryStatus]) -> Any:
    return (
        sa.select(sa.func.count())
        .select_from(DELIVERY)
        .where(DELIVERY.c.update_id == update_id, DELIVERY.c.status.in_(statuses))
        .scalar_subquery()
    )


def finish_if_done(session: Session | Connection, update_id: int) -> bool:
    """Mark a sending update `sent`, with exact counts, once every delivery row is written and
    none is pending."""
    pending = (
        sa.select(sa.literal(1))
        .where(
            DELIVERY.c.update_id == update_id,
            DELIVERY.c.status == DeliveryStatus.PENDING.value,
        )
        .exists()
    )
    # Not while delivery rows are still being written (mailing/sending/population.py).
    written = ~population.still_writing(update_id)
    done = transition(
        session,
        UPDATE,
        UpdateTransitions.FINISH,
        sa.and_(UPDATE.c.id == update_id, written, ~pending),
        {
            "sent_at": utcnow(),
            "recipients": population.total_rows(update_id),
            "sent": _count(update_id, DELIVERED),
            "failed": _count(update_id, frozenset({DeliveryStatus.FAILED})),
        },
    )
    if done:
        log.info("update %s: sent", update_id)
    return bool(done)


def abandon(session: Session | Connection, update_id: int, reason: str) -> bool:
    """Stop a send the service cannot carry out (its email cannot be built): the update is
    cancelled with the reason, its pending deliveries cancelled; nothing is retried for ever."""
    stopped = transition(
        session,
        UPDATE,
        UpdateTransitions.ABANDON,
        UPDATE.c.id == update_id,
        {"error": reason[:300]},
    )
    if stopped:
        population.close(session, update_id)
        transition(session, DELIVERY, DeliveryTransitions.CANCEL, DELIVERY.c.update_id == update_id)
        log.warning("update %s: abandoned: %s", update_id, reason)
    return bool(stopped)

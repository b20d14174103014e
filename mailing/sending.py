"""Sending an update: who receives it, one delivery row each, and handing them to the relay.

The database is the source of truth and the broker only a notification. `start_send` turns a
draft into `sending` and writes one pending delivery per recipient in the same transaction;
`dispatch` tells workers which id ranges to send; `deliver_batch` claims pending rows under row
locks (PostgreSQL `FOR UPDATE SKIP LOCKED`; on SQLite the one write lock), sends them over one
persistent SMTP connection and marks them in commits of at most `send_commit_chunk`. Because the
locks are held while a chunk is sent, an unsubscribe (which cancels pending deliveries in its own
transaction) either waits for the chunk or cancels it: a mail is never sent after it. A worker
killed mid-chunk loses its transaction, so at most one chunk is sent twice. `reconcile` re-drives
anything whose task was lost.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlmodel import Session
from sqlmodel.sql.sqltypes import UTCDateTime

from mailing import links, updates
from mailing import staff as staff_audit
from mailing.config import get_settings
from mailing.db import get_engine
from mailing.deliverability.returnpath import for_delivery
from mailing.mailer import Deferred, Mailer, PermanentFailure, TransientFailure
from mailing.models import Update, utcnow
from mailing.states import (
    DeliveryStatus,
    SubscriberStatus,
    UpdateStatus,
    UpdateTransitions,
    transition,
)
from mailing.tokens import Purpose

log = logging.getLogger(__name__)

POPULATE_CHUNK = 5000
Publish = Callable[[int, int, int], None]  # (update_id, first_delivery_id, last_delivery_id)


class UpdateNotFound(LookupError):
    pass


# --- Who receives an update (the one place that decides) --------------------------------------

_RECIPIENTS = """
    FROM subscriber s
    WHERE s.status = 'active'
      AND EXISTS (SELECT 1 FROM subscriber_theme t
                  WHERE t.subscriber_id = s.id AND t.theme IN :themes)
"""


def _themes_param(sql: str) -> sa.TextClause:
    return sa.text(sql).bindparams(sa.bindparam("themes", expanding=True))


def _sql(sql: str, *, times: Sequence[str] = ("now",), lists: Sequence[str] = ()) -> sa.TextClause:
    """Raw SQL (fixed fragments, never input); times bound as the models store them."""
    names = set(sa.text(sql)._bindparams)
    params = [sa.bindparam(n, type_=UTCDateTime()) for n in times if n in names]
    params += [sa.bindparam(n, expanding=True) for n in lists if n in names]
    return sa.text(sql).bindparams(*params)


def _rowcount(result: Any) -> int:
    return int(result.rowcount or 0)


def count_recipients(session: Session, themes: Sequence[str]) -> int:
    """How many active subscribers chose at least one of these themes (for the compose page)."""
    sql = _themes_param("SELECT COUNT(*) " + _RECIPIENTS)
    return int(session.execute(sql, {"themes": list(themes)}).scalar_one())


def _populate(session: Session, update_id: int, themes: list[str]) -> int:
    """One pending delivery per recipient, a keyset page at a time; rows never enter Python."""
    page_end = _themes_param(
        "SELECT MAX(id) FROM (SELECT s.id " + _RECIPIENTS + " AND s.id > :after "  # noqa: S608
        "ORDER BY s.id LIMIT :n) AS page"
    )
    insert = _themes_param(
        "INSERT INTO delivery (update_id, subscriber_id, status, attempts) "
        "SELECT :u, s.id, 'pending', 0 " + _RECIPIENTS + " AND s.id > :after AND s.id <= :upto "
        "ON CONFLICT (update_id, subscriber_id) DO NOTHING"
    )
    after = 0
    while True:
        upto = session.execute(
            page_end, {"themes": themes, "after": after, "n": POPULATE_CHUNK}
        ).scalar_one()
        if upto is None:
            break
        session.execute(insert, {"u": update_id, "themes": themes, "after": after, "upto": upto})
        after = int(upto)
    return int(
        session.execute(
            sa.text("SELECT COUNT(*) FROM delivery WHERE update_id = :u"), {"u": update_id}
        ).scalar_one()
    )


# --- Starting ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Started:
    started: bool  # False: it was not a draft (already sending or sent); nothing more happens
    recipients: int


def start_send(session: Session, update_id: int, staff_id: int | None) -> Started:
    """Turn a draft into `sending` and write its deliveries, all in the caller's transaction.

    Only one caller can win the draft -> sending change (a conditional UPDATE), so a second
    send does nothing. After committing, the caller enqueues `start_update_send` (see
    workers/enqueue.py), which runs `dispatch`. Raises UpdateNotFound.
    """
    update = updates.find(session, update_id)
    if update is None:
        raise UpdateNotFound(update_id)
    table = Update.__table__  # type: ignore[attr-defined]
    won = transition(
        session,
        table,
        UpdateTransitions.START,
        table.c.id == update_id,
        {"send_started_at": utcnow()},
    )
    if not won:
        session.refresh(update)
        return Started(False, update.recipients)
    recipients = _populate(session, update_id, updates.themes_of(update))
    session.execute(
        sa.text("UPDATE theme_update SET recipients = :n WHERE id = :u"),
        {"n": recipients, "u": update_id},
    )
    staff_audit.audit(session, staff_id, "sent", update_id, f"{recipients} recipients")
    session.expire(update)
    log.info("update %s: sending to %s recipients", update_id, recipients)
    if recipients == 0:
        finish_if_done(session, update_id)
    return Started(True, recipients)


def dispatch(
    session: Session,
    update_id: int,
    publish: Publish,
    *,
    stale_before: datetime | None = None,
    now: datetime | None = None,
) -> int:
    """Enqueue batch tasks for pending deliveries not yet enqueued (or enqueued before
    `stale_before`); commits as it goes, so a crash here loses nothing. Returns tasks enqueued."""
    batch = max(1, get_settings().send_batch_size)
    now = now or utcnow()
    stale = "" if stale_before is None else " OR enqueued_at < :stale"
    next_range = _sql(
        "SELECT id FROM delivery WHERE update_id = :u AND status = 'pending' AND id > :after "  # noqa: S608
        f"AND (enqueued_at IS NULL{stale}) ORDER BY id LIMIT :n",
        times=("stale",),
    )
    after, tasks = 0, 0
    while True:
        params: dict[str, Any] = {"u": update_id, "after": after, "n": batch}
        if stale_before is not None:
            params["stale"] = stale_before
        ids = session.execute(next_range, params).scalars().all()
        if not ids:
            return tasks
        first, last = int(ids[0]), int(ids[-1])
        session.execute(
            _sql(
                "UPDATE delivery SET enqueued_at = :now WHERE update_id = :u "
                "AND id BETWEEN :a AND :b AND status = 'pending'"
            ),
            {"now": now, "u": update_id, "a": first, "b": last},
        )
        session.commit()
        publish(update_id, first, last)
        tasks += 1
        after = last


# --- Sending a batch ---------------------------------------------------------------------------


@dataclass
class BatchOutcome:
    sent: int = 0
    failed: int = 0
    cancelled: int = 0
    deferred: bool = False  # a transient failure: retry the task later


@dataclass(frozen=True)
class _Row:
    delivery_id: int
    subscriber_id: int
    status: str
    email: str
    email_key: str
    token_version: int


_CLAIM_COLUMNS = (
    "SELECT d.id, d.subscriber_id, s.status, s.email, s.email_key, s.token_version "
    "FROM delivery d JOIN subscriber s ON s.id = d.subscriber_id "
)


def _claim(conn: Connection, update_id: int, first: int, last: int, limit: int) -> list[_Row]:
    """Lock up to `limit` pending deliveries of the range for this transaction."""
    params = {"u": update_id, "a": first, "b": last, "n": limit}
    where = "d.update_id = :u AND d.id BETWEEN :a AND :b AND d.status = 'pending'"
    if conn.dialect.name == "postgresql":
        # The chunk's "sent" marks need not wait for a disk flush (4 ms a commit here): a worker
        # crash still loses the whole transaction, and a database crash can lose only the last
        # fraction of a second of marks, which means sending those again, never losing them.
        conn.execute(sa.text("SET LOCAL synchronous_commit = off"))
        sql = f"{_CLAIM_COLUMNS} WHERE {where} ORDER BY d.id LIMIT :n FOR UPDATE OF d SKIP LOCKED"
    else:
        # SQLite has one writer: writing first takes the database's write lock, held until commit,
        # so no unsubscribe can commit while this chunk is being sent.
        conn.execute(
            sa.text(
                "UPDATE delivery SET attempts = attempts WHERE id IN (SELECT d.id FROM delivery d "  # noqa: S608
                f"WHERE {where} ORDER BY d.id LIMIT :n)"
            ),
            params,
        )
        sql = f"{_CLAIM_COLUMNS} WHERE {where} ORDER BY d.id LIMIT :n"
    return [_Row(*r) for r in conn.execute(sa.text(sql), params).all()]


@dataclass(frozen=True)
class _LinkSubject:
    """A subscribers.LinkSubject from a claimed row, without building an ORM object for every
    recipient."""

    id: int
    token_version: int
    email_key: str


def _tokens(row: _Row) -> tuple[str, str]:
    who = _LinkSubject(row.subscriber_id, row.token_version, row.email_key)
    return links.token_for(Purpose.UNSUBSCRIBE, who), links.token_for(Purpose.MANAGE, who)


def deliver_batch(update_id: int, first_id: int, last_id: int) -> BatchOutcome:
    """Send the pending deliveries with ids in [first_id, last_id], a commit chunk at a time.

    Deliveries whose subscriber is no longer active are cancelled; a 5xx marks one failed; a
    4xx or a lost connection stops the batch with `deferred` set (those stay pending, attempts
    counted) so the task retries later. Safe to run twice on the same range at once.
    """
    settings = get_settings()
    outcome = BatchOutcome()
    with Session(get_engine(), expire_on_commit=False) as session:
        update = session.get(Update, update_id)
        if update is None or update.status != UpdateStatus.SENDING:
            return outcome
        prepared = updates.prepared_for(update)
    mailer = _mailer()
    rate = send_rate()
    chunk = max(1, settings.send_commit_chunk)
    relay_down = False
    while not relay_down:
        # Wait for the send rate before taking locks, so waiting never blocks an unsubscribe.
        rate.acquire(chunk)
        # A plain connection, not an ORM session: this loop runs once per 50 emails.
        with get_engine().begin() as conn:
            rows = _claim(conn, update_id, first_id, last_id, chunk)
            if not rows:
                break
            # Rows before these are settled or locked by another claimer (theirs to settle).
            first_id = rows[-1].delivery_id + 1
            result = _Chunk()
            # Build the chunk's copies first, then send them: the two tight loops run about
            # twice as fast as interleaving signing with SMTP round trips (CPU caches stay warm).
            copies: list[tuple[_Row, bytes]] = []
            for row in rows:
                if row.status != SubscriberStatus.ACTIVE:
                    result.cancelled.append(row.delivery_id)
                    continue
                unsubscribe_token, manage_token = _tokens(row)
                values = updates.recipient_values(row.email, unsubscribe_token, manage_token)
                copies.append((row, prepared.personalise(values)))
            for row, raw in copies:
                try:
                    sender = for_delivery(
                        prepared.envelope_from, row.delivery_id, row.subscriber_id
                    )
                    mailer.send(sender, row.email, raw)
                except PermanentFailure as exc:
                    result.failed.append({"id": row.delivery_id, "e": str(exc)[:200]})
                    continue
                except Deferred:
                    result.deferred.append(row.delivery_id)
                    continue
                except TransientFailure as exc:
                    # Any other transient failure means the relay is unreachable: stop the batch.
                    result.unreachable.append(row.delivery_id)
                    mailer.close()
                    relay_down = True
                    log.warning("update %s: relay unreachable (%s); will retry", update_id, exc)
                    break
                result.sent.append(row.delivery_id)
            _settle(conn, update_id, result, settings.send_max_retries)
        outcome.sent += len(result.sent)
        outcome.failed += len(result.failed)
        outcome.cancelled += len(result.cancelled)
        outcome.deferred = outcome.deferred or bool(result.deferred or result.unreachable)
    with Session(get_engine(), expire_on_commit=False) as session, session.begin():
        finish_if_done(session, update_id)
    return outcome


@dataclass
class _Chunk:
    sent: list[int] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    cancelled: list[int] = field(default_factory=list)
    deferred: list[int] = field(default_factory=list)  # the relay answered 4xx for these
    unreachable: list[int] = field(default_factory=list)  # the relay could not be reached


def _settle(conn: Connection, update_id: int, result: _Chunk, max_attempts: int) -> None:
    now = utcnow()
    if result.sent:
        conn.execute(
            _sql(
                "UPDATE delivery SET status = 'sent', sent_at = :now, attempts = attempts + 1 "
                "WHERE id IN :ids",
                lists=("ids",),
            ),
            {"now": now, "ids": result.sent},
        )
    if result.cancelled:
        conn.execute(
            _sql("UPDATE delivery SET status = 'cancelled' WHERE id IN :ids", lists=("ids",)),
            {"ids": result.cancelled},
        )
    if result.failed:
        conn.execute(
            sa.text(
                "UPDATE delivery SET status = 'failed', error = :e, attempts = attempts + 1 "
                "WHERE id = :id"
            ),
            result.failed,
        )
    retried = result.deferred + result.unreachable
    if retried:
        # Both stay pending for the retry, the attempt counted.
        conn.execute(
            _sql("UPDATE delivery SET attempts = attempts + 1 WHERE id IN :ids", lists=("ids",)),
            {"ids": retried},
        )
    gave_up = 0
    if result.deferred:
        # One the relay keeps deferring is given up; an unreachable relay is not the message's
        # fault, so those are never given up on.
        gave_up = _rowcount(
            conn.execute(
                _sql(
                    "UPDATE delivery SET status = 'failed', error = :e "
                    "WHERE id IN :ids AND attempts >= :max",
                    lists=("ids",),
                ),
                {
                    "ids": result.deferred,
                    "max": max_attempts,
                    "e": f"deferred {max_attempts} times",
                },
            )
        )
    if result.sent or result.failed or gave_up:
        conn.execute(
            sa.text("UPDATE theme_update SET sent = sent + :s, failed = failed + :f WHERE id = :u"),
            {"s": len(result.sent), "f": len(result.failed) + gave_up, "u": update_id},
        )


def finish_if_done(session: Session | Connection, update_id: int) -> bool:
    """Mark a sending update `sent`, with exact counts, once no delivery is pending."""
    done = _rowcount(
        session.execute(
            _sql(
                "UPDATE theme_update SET status = 'sent', sent_at = :now, "
                "sent = (SELECT COUNT(*) FROM delivery "
                "WHERE update_id = :u AND status = 'sent'), "
                "failed = (SELECT COUNT(*) FROM delivery "
                "WHERE update_id = :u AND status = 'failed') "
                "WHERE id = :u AND status = 'sending' AND NOT EXISTS "
                "(SELECT 1 FROM delivery WHERE update_id = :u AND status = 'pending')"
            ),
            {"now": utcnow(), "u": update_id},
        )
    )
    if done:
        log.info("update %s: sent", update_id)
    return bool(done)


def backoff_seconds(retries: int) -> float:
    """Exponential backoff with full jitter, capped."""
    settings = get_settings()
    ceiling = min(settings.send_retry_backoff_max, settings.send_retry_backoff * (2**retries))
    return random.uniform(ceiling / 2, ceiling)


# --- Progress and recovery --------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    status: str
    recipients: int
    sent: int
    failed: int
    cancelled: int
    pending: int


def progress(session: Session, update_id: int) -> Progress:
    """Live counts from the delivery rows (raises UpdateNotFound)."""
    update = updates.find(session, update_id, refresh=True)
    if update is None:
        raise UpdateNotFound(update_id)
    counts = dict(
        session.execute(
            sa.text("SELECT status, COUNT(*) FROM delivery WHERE update_id = :u GROUP BY status"),
            {"u": update_id},
        ).all()
    )
    return Progress(
        status=update.status.value,
        recipients=update.recipients,
        sent=int(counts.get(DeliveryStatus.SENT.value, 0)),
        failed=int(counts.get(DeliveryStatus.FAILED.value, 0)),
        cancelled=int(counts.get(DeliveryStatus.CANCELLED.value, 0)),
        pending=int(counts.get(DeliveryStatus.PENDING.value, 0)),
    )


def reconcile(session: Session, now: datetime, publish: Publish) -> int:
    """Re-drive sends whose tasks were lost; safe to run at any time. Returns tasks enqueued.

    For each update still `sending`: if nothing is pending it is finished; otherwise pending
    deliveries never enqueued, or enqueued more than claim_timeout ago while the update made no
    progress for that long, are enqueued again. A claim is a row lock held by an open
    transaction, so a dead worker's claims end with its connection; duplicates of a task find
    the rows sent or locked and do nothing.
    """
    stale_before = now - timedelta(seconds=get_settings().claim_timeout_seconds)
    ids = session.execute(
        sa.text("SELECT id FROM theme_update WHERE status = 'sending' ORDER BY id")
    ).scalars()
    tasks = 0
    for update_id in list(ids):
        if finish_if_done(session, update_id):
            session.commit()
            continue
        last_progress = session.execute(
            sa.text("SELECT MAX(sent_at) AS m FROM delivery WHERE update_id = :u").columns(
                sa.column("m", UTCDateTime())
            ),
            {"u": update_id},
        ).scalar_one()
        stalled = last_progress is None or last_progress < stale_before
        tasks += dispatch(
            session, update_id, publish, stale_before=stale_before if stalled else None, now=now
        )
    session.commit()
    if tasks:
        log.info("reconcile: enqueued %s batch tasks", tasks)
    return tasks


# --- One SMTP connection and one send rate per worker process ---------------------------------

_local = threading.local()


def _mailer() -> Mailer:
    """A persistent connection for this worker thread, kept open across chunks and tasks."""
    settings = get_settings()
    key = (settings.smtp_host, settings.smtp_port, settings.smtp_username)
    current: tuple[tuple[Any, ...], Mailer] | None = getattr(_local, "mailer", None)
    if current is None or current[0] != key:
        if current is not None:
            current[1].close()
        current = (key, Mailer(settings))
        _local.mailer = current
    return current[1]


class SendRate:
    """MAILING_SEND_RATE messages a second across every worker: a per-second counter in Redis
    (in-process without Redis). A batch takes a commit chunk's worth at a time."""

    def __init__(self, rate: float, redis_url: str | None) -> None:
        self.rate = int(rate)
        self._lock = threading.Lock()
        self._counts: dict[int, int] = {}
        self._redis: Any = None
        if self.rate > 0 and redis_url:
            import redis

            self._redis = redis.Redis.from_url(redis_url, socket_timeout=2)

    def acquire(self, n: int) -> None:
        """Block until `n` messages may go (at once, when unlimited)."""
        if self.rate <= 0:
            return
        needed = n
        while needed > 0:
            now = time.time()
            second = int(now)
            needed -= self._take(second, min(needed, self.rate))
            if needed > 0:
                time.sleep(max(0.001, second + 1 - now))

    def _take(self, second: int, want: int) -> int:
        if self._redis is not None:
            key = f"mailing:send-rate:{second}"
            pipe = self._redis.pipeline()
            pipe.incrby(key, want)
            pipe.expire(key, 5)
            used = int(pipe.execute()[0])
        else:
            with self._lock:
                used = self._counts.get(second, 0) + want
                self._counts = {second: used}
        before = used - want
        return max(0, min(want, self.rate - before))


_rates: dict[tuple[float, str | None], SendRate] = {}


def send_rate() -> SendRate:
    settings = get_settings()
    key = (settings.send_rate, settings.redis_url)
    if key not in _rates:
        _rates[key] = SendRate(settings.send_rate, settings.redis_url)
    return _rates[key]

"""Sending the weekly summaries that mailing/digests.py planned, exactly once each.

The `weekly_digest` rows are the truth, the broker only a notification, as for updates
(mailing/sending.py). `deliver_batch` claims pending rows under row locks (PostgreSQL `FOR UPDATE
SKIP LOCKED`, plus a share lock on the subscriber row; on SQLite the one write lock), re-reads
each subscriber in that transaction, sends, and marks the rows in the same transaction. So an
unsubscribe or erasure either commits first (the summary is cancelled, never sent) or waits for
the chunk; a worker killed mid-chunk loses its transaction and at most that chunk is sent again.
`run` (beat, every reconcile interval) plans a due week and re-drives rows whose task was lost:
pending rows handed out more than MAILING_SEND_STALL_SECONDS ago are handed out again once no
summary has been sent for that long (a duplicate task finds them sent or locked and does
nothing); while summaries are going out, only rows handed out over REDRIVE_AFTER ago are.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlmodel import Session

from mailing import digests, links, updates
from mailing.config import get_settings
from mailing.db import get_engine
from mailing.deliverability.returnpath import for_notice
from mailing.emails import Prepared
from mailing.mailer import Deferred, Mailer, PermanentFailure, TransientFailure
from mailing.models import WeeklyDigest, utcnow
from mailing.ratelimit import send_rate
from mailing.states import DigestStatus, DigestTransitions, Frequency, SubscriberStatus, transition
from mailing.tokens import Purpose

log = logging.getLogger(__name__)

Publish = Callable[[int, int], None]  # (first_digest_id, last_digest_id)
TABLE: sa.Table = WeeklyDigest.__table__  # type: ignore[attr-defined]
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


class _Who(NamedTuple):
    """A subscribers.LinkSubject made from a claimed row."""

    id: int
    token_version: int
    email_key: str


_COLUMNS = (
    "SELECT d.id, d.subscriber_id, d.week, d.update_ids, s.status, s.frequency, s.email, "
    "s.email_key, s.token_version FROM weekly_digest d JOIN subscriber s ON s.id = d.subscriber_id "
)
_WHERE = "d.id BETWEEN :a AND :b AND d.status = :status"


def _claim(conn: Connection, first: int, last: int, limit: int) -> list[_Row]:
    params = {"a": first, "b": last, "n": limit, "status": DigestStatus.PENDING.value}
    if conn.dialect.name == "postgresql":
        # The share lock on the subscriber makes an unsubscribe or erasure wait for this chunk.
        sql = (
            f"{_COLUMNS} WHERE {_WHERE} ORDER BY d.id LIMIT :n "
            "FOR UPDATE OF d SKIP LOCKED FOR SHARE OF s"
        )
    else:
        # SQLite has one writer: writing first holds the database's write lock until commit.
        conn.execute(
            sa.text(
                "UPDATE weekly_digest SET attempts = attempts WHERE id IN (SELECT d.id FROM "  # noqa: S608
                f"weekly_digest d WHERE {_WHERE} ORDER BY d.id LIMIT :n)"
            ),
            params,
        )
        sql = f"{_COLUMNS} WHERE {_WHERE} ORDER BY d.id LIMIT :n"
    return [_Row(*r) for r in conn.execute(sa.text(sql), params).all()]


@dataclass
class Outcome:
    sent: int = 0
    failed: int = 0
    cancelled: int = 0
    deferred: bool = False


@dataclass
class _Chunk:
    sent: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    cancelled: list[int] = field(default_factory=list)
    retry: list[int] = field(default_factory=list)


def deliver_batch(first_id: int, last_id: int) -> Outcome:
    """Send the pending summaries with ids in [first_id, last_id], a commit chunk at a time.

    One no longer due (unsubscribed, erased, back to each update, or listing nothing still
    published) is cancelled; a 5xx fails one; a 4xx or a lost relay leaves it pending for `run`.
    """
    settings = get_settings()
    outcome = Outcome()
    built: dict[tuple[str, str], Prepared | None] = {}
    chunk = max(1, settings.send_commit_chunk)
    rate = send_rate()  # MAILING_SEND_RATE covers summaries and updates alike
    with Mailer(settings) as mailer:
        relay_down = False
        while not relay_down:
            # Wait for the send rate before taking locks, so waiting never blocks an unsubscribe.
            rate.acquire(chunk)
            with get_engine().begin() as conn:
                rows = _claim(conn, first_id, last_id, chunk)
                if not rows:
                    break
                first_id = rows[-1].digest_id + 1
                result = _Chunk()
                for row in rows:
                    prepared = _prepared(built, row)
                    if prepared is None:
                        result.cancelled.append(row.digest_id)
                        continue
                    try:
                        sender = for_notice(prepared.envelope_from, row.subscriber_id)
                        mailer.send(sender, row.email, _copy(prepared, row))
                    except PermanentFailure:
                        result.failed.append(row.digest_id)
                        continue
                    except Deferred:
                        result.retry.append(row.digest_id)
                        continue
                    except TransientFailure:
                        result.retry.append(row.digest_id)
                        relay_down = True
                        break
                    result.sent.append(row.digest_id)
                _settle(conn, result)
            outcome.sent += len(result.sent)
            outcome.failed += len(result.failed)
            outcome.cancelled += len(result.cancelled)
            outcome.deferred = outcome.deferred or bool(result.retry)
    return outcome


def _prepared(built: dict[tuple[str, str], Prepared | None], row: _Row) -> Prepared | None:
    if row.status != SubscriberStatus.ACTIVE or row.frequency != Frequency.WEEKLY:
        return None
    key = (row.week, row.update_ids)  # at most one per combination of themes each week
    if key not in built:
        with Session(get_engine()) as session:
            built[key] = digests.prepare_digest(session, row.week, row.update_ids)
    return built[key]


def _copy(prepared: Prepared, row: _Row) -> bytes:
    who = _Who(row.subscriber_id, row.token_version, row.email_key)
    values = updates.recipient_values(
        row.email,
        links.token_for(Purpose.UNSUBSCRIBE, who),
        links.token_for(Purpose.MANAGE, who),
    )
    return prepared.personalise(values)


def _settle(conn: Connection, result: _Chunk) -> None:
    ids = TABLE.c.id.in_
    counted: dict[str, Any] = {"attempts": TABLE.c.attempts + 1}
    if result.sent:
        transition(
            conn, TABLE, DigestTransitions.SEND, ids(result.sent), {**counted, "sent_at": utcnow()}
        )
    if result.failed:
        transition(
            conn, TABLE, DigestTransitions.FAIL, ids(result.failed), {**counted, "error": "5xx"}
        )
    if result.cancelled:
        transition(conn, TABLE, DigestTransitions.CANCEL, ids(result.cancelled))
    if result.retry:
        conn.execute(sa.update(TABLE).where(ids(result.retry)).values(**counted))
        # One the relay keeps refusing for a while is given up on, as update deliveries are.
        transition(
            conn,
            TABLE,
            DigestTransitions.FAIL,
            sa.and_(ids(result.retry), TABLE.c.attempts >= get_settings().send_max_retries),
            {"error": "deferred too often"},
        )

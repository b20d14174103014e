"""The one claim -> build copies -> send -> settle loop every email goes through.

A source says what is owed: it claims a chunk of its rows under row locks in the loop's
transaction, builds each row's copy (or None: the row is no longer owed and is cancelled), and
settles the chunk in the same transaction. Because the locks are held while the chunk is sent,
an unsubscribe either waits for the chunk or cancels it first, and a worker killed mid-chunk
loses its transaction with its connection: those rows are owed again at once. The source is
asked before every chunk whether it is still going (a pause or a cancel; a source may answer it
in its claim instead, by claiming None), so a stop lets the loop finish at most the chunk it
holds.

The relay's answers, per copy: taken (sent), 5xx (failed), 4xx (deferred: the source sets a
retry time with `backoff_seconds`), or an unreachable relay (the chunk stops there; what was not
attempted stays owed, and the loop ends so the caller can retry after a backoff).
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Generic, Protocol, TypeVar

from sqlalchemy.engine import Connection

from mailing.config import get_settings
from mailing.db import get_engine
from mailing.mail.lanes import POOL, relay_of
from mailing.mail.relay import Deferred, Mailer, PermanentFailure, TransientFailure
from mailing.models import utcnow
from mailing.ratelimit import send_rate

log = logging.getLogger(__name__)

Row = TypeVar("Row")


@dataclass(frozen=True)
class Copy:
    envelope_from: str
    to: str
    raw: bytes


@dataclass
class Settled(Generic[Row]):
    """What became of a chunk's rows (rows after an unreachable relay are in none of these)."""

    sent: list[Row] = field(default_factory=list)
    failed: list[tuple[Row, PermanentFailure]] = field(default_factory=list)
    cancelled: list[Row] = field(default_factory=list)
    deferred: list[tuple[Row, Deferred]] = field(default_factory=list)  # the relay said 4xx
    unreachable: list[tuple[Row, TransientFailure]] = field(default_factory=list)

    def retries(self, attempts: Callable[[Row], int]) -> tuple[list[Row], list[Row], datetime]:
        """The rows to try again later (deferred, then those that met an unreachable relay),
        the deferred alone (those are given up after the last try; an unreachable relay is not
        the message's fault), and when they are due: the backoff of the most-tried."""
        deferred = [row for row, _ in self.deferred]
        retried = deferred + [row for row, _ in self.unreachable]
        wait = backoff_seconds(max((attempts(r) for r in retried), default=0))
        return retried, deferred, utcnow() + timedelta(seconds=wait)


class Source(Protocol[Row]):
    """What one kind of email owes and how its rows are settled."""

    # Whether its emails count against MAILING_SEND_RATE (bulk mail does; notices do not).
    rated: bool

    def still_going(self, conn: Connection) -> bool: ...
    # The chunk's rows, locked; None: the source stopped (for a source that checks that in
    # the claim itself).
    def claim(self, conn: Connection, limit: int) -> Sequence[Row] | None: ...
    def copy(self, row: Row) -> Copy | None: ...
    def settle(self, conn: Connection, settled: Settled[Row]) -> None: ...
    # After the chunk's transaction committed: work that must see it (the send guard).
    def committed(self, settled: Settled[Row]) -> None: ...


@dataclass
class Outcome:
    sent: int = 0
    failed: int = 0
    cancelled: int = 0
    deferred: int = 0  # copies the relay answered 4xx for
    unreachable: bool = False  # the relay could not be reached: try again after a backoff
    more: bool = False  # the deadline came with work left: continue in a new task
    stopped: bool = False  # the source said it is no longer going (paused, cancelled)

    def merge(self, other: Outcome) -> None:
        self.sent += other.sent
        self.failed += other.failed
        self.cancelled += other.cancelled
        self.deferred += other.deferred
        self.unreachable = self.unreachable or other.unreachable
        self.stopped = self.stopped or other.stopped
        # Work is left only if no lane found the source exhausted or stopped.
        self.more = self.more or other.more

    def add(self, settled: Settled[Row]) -> None:
        self.sent += len(settled.sent)
        self.failed += len(settled.failed)
        self.cancelled += len(settled.cancelled)
        self.deferred += len(settled.deferred)
        self.unreachable = self.unreachable or bool(settled.unreachable)


class ClaimClock:
    """When each lane last claimed: a source's retry check counts from the earliest lane's."""

    def __init__(self) -> None:
        self._at: dict[int, datetime] = {}
        self._first = utcnow()

    def mark(self) -> datetime:
        now = self._at[threading.get_ident()] = utcnow()
        return now

    def earliest(self) -> datetime:
        return min(self._at.values(), default=self._first)


def lanes_for(conn_dialect: str, wanted: int | None = None) -> int:
    """MAILING_SMTP_CONNECTIONS lanes on PostgreSQL (SKIP LOCKED hands each its own chunk); one
    on SQLite, whose one write lock a chunk holds while it is sent."""
    if conn_dialect != "postgresql":
        return 1
    return max(1, wanted or get_settings().smtp_connections)


MIN_LANES = 2  # lanes never retire below this: one slow or dead connection stalls no send
MAX_CHUNK_FACTOR = 4  # a chunk grows to at most this many times MAILING_SEND_COMMIT_CHUNK


class Lanes:
    """The lanes of one run and the chunks they claim: `start` of them (at most `count`), each
    chunk its share of count x size. A lane needs company only while it waits for the relay:
    with a round trip of r a message (the shortest its last chunk saw) and c of its own CPU a
    message, about 1 + r / c lanes keep a process busy; more only queue for the CPU, the
    interpreter's lock and each other's row locks (a relay close by: 48 lanes sent 100,000 at
    loopback in 13.5 s, 12 in 8.6 s). A lane retires after its chunk while more than that many
    are running (never below MIN_LANES), and the others' chunks grow by its share, so lanes x
    chunk never exceeds count x size: the in-flight bound (what a killed worker may send
    again) holds."""

    def __init__(self, count: int, size: int, start: int | None = None) -> None:
        self._lock = threading.Lock()
        self.active = start or count
        self.budget = count * size
        self.size = size

    def chunk(self) -> int:
        with self._lock:
            return min(self.size * MAX_CHUNK_FACTOR, self.budget // self.active)

    def retire(self, round_trip: float | None, cpu_per_copy: float) -> bool:
        """True if the lane that measured these is to stop now (its chunk is settled)."""
        if round_trip is None or cpu_per_copy <= 0:
            return False
        needed = max(MIN_LANES, 1 + math.ceil(round_trip / cpu_per_copy))
        with self._lock:
            if self.active <= needed:
                return False
            self.active -= 1
            return True


def run(
    source: Source[Row],
    *,
    deadline: float | None = None,
    chunk: int | None = None,
    lanes: int | None = None,
) -> Outcome:
    """Send what `source` owes, a chunk at a time on each of `lanes` relay connections at once
    (default: lanes_for the database; fewer while the relay is faster than the lanes, see
    Lanes), until nothing is claimable, the source stops or `deadline` (time.monotonic())
    passes; a lane whose relay is unreachable stops on its own. At most lanes x chunk emails
    are in flight: what a killed worker may send again."""
    size = max(1, chunk or get_settings().send_commit_chunk)
    count = lanes_for(get_engine().dialect.name, lanes)
    # Start with twice as many lanes as the last run kept at the end (all, the first time):
    # each lane's first chunk costs as much as the rest when they are too many.
    kept = (*relay_of(get_settings()), count)
    start = min(count, max(MIN_LANES, 2 * POOL.lanes_kept.get(kept, count)))
    shared = Lanes(count, size, start)
    stop = threading.Event()
    if count == 1:
        return _lane(source, shared, deadline, stop)
    futures = [
        POOL.executor(count).submit(_lane, source, shared, deadline, stop) for _ in range(start)
    ]
    outcome = Outcome()
    for future in futures:
        outcome.merge(future.result())
    POOL.lanes_kept[kept] = shared.active
    return outcome


def _lane(
    source: Source[Row], shared: Lanes, deadline: float | None, stop: threading.Event
) -> Outcome:
    """One lane: its own relay connection (from this process's pool) and its own chunks."""
    outcome = Outcome()
    lane = POOL.take()
    if lane is None:  # every connection (here, or across workers) is busy: another time
        outcome.more = True
        return outcome
    rate = send_rate() if source.rated else None
    per_copy = 0.0  # seconds a copy took in the last chunk (the relay's round trip, mostly)
    conn: Connection | None = None
    try:
        # One database connection for the lane's run, a transaction a chunk: checking one out
        # of the pool for every chunk cost a ping (pool_pre_ping) each time.
        conn = get_engine().connect()
        while not stop.is_set():
            limit = _fits(shared.chunk(), deadline, per_copy)
            if limit == 0:
                outcome.more = True
                break
            if rate is not None:
                # Wait for the send rate before taking locks, so waiting never blocks an
                # unsubscribe.
                rate.acquire(limit)
            if not POOL.renew(lane):
                outcome.more = True  # the lease was lost (Redis flushed): give the slot up
                break
            # A plain connection, not an ORM session: this loop runs once per 50 emails.
            with conn.begin():
                rows = source.claim(conn, limit) if source.still_going(conn) else None
                if rows is None:
                    outcome.stopped = True
                    stop.set()  # the other lanes stop after the chunk they hold
                    break
                if not rows:
                    break
                began, cpu = time.monotonic(), time.thread_time()
                settled = _send(source, rows, lane.mailer)
                per_copy = (time.monotonic() - began) / len(rows)
                cpu_per_copy = (time.thread_time() - cpu) / len(rows)
                source.settle(conn, settled)
            source.committed(settled)
            outcome.add(settled)
            if settled.unreachable or shared.retire(lane.mailer.round_trip, cpu_per_copy):
                break
    except BaseException:
        POOL.close(lane)
        raise
    finally:
        if conn is not None:
            conn.close()
    if outcome.unreachable:
        POOL.close(lane)
    else:
        POOL.give(lane)
    return outcome


def _fits(size: int, deadline: float | None, per_copy: float) -> int:
    """How many copies the next chunk may hold: a full chunk, or as many as the time left
    allows at the last chunk's pace (so the lanes of a task end together at its deadline, none
    idle while another finishes a long chunk); 0 when the time is up."""
    if deadline is None:
        return size
    left = deadline - time.monotonic()
    if left <= 0:
        return 0
    if per_copy <= 0:
        return size
    return max(1, min(size, int(left / per_copy)))


def _send(source: Source[Row], rows: Sequence[Row], mailer: Mailer) -> Settled[Row]:
    """Build the chunk's copies first, then send them: the two tight loops run about twice as
    fast as interleaving signing with SMTP round trips (CPU caches stay warm)."""
    settled: Settled[Row] = Settled()
    copies: list[tuple[Row, Copy]] = []
    for row in rows:
        copy = source.copy(row)
        if copy is None:
            settled.cancelled.append(row)
        else:
            copies.append((row, copy))
    answers = mailer.send_many([(c.envelope_from, c.to, c.raw) for _, c in copies])
    for (row, _), failure in zip(copies, answers, strict=False):
        if failure is None:
            settled.sent.append(row)
        elif isinstance(failure, PermanentFailure):
            settled.failed.append((row, failure))
        elif isinstance(failure, Deferred):
            settled.deferred.append((row, failure))
        else:
            # Any other transient failure means the relay is unreachable: send_many attempted
            # nothing after it.
            assert isinstance(failure, TransientFailure)
            settled.unreachable.append((row, failure))
            log.warning("relay unreachable (%s); will retry", failure)
    return settled


def send_now(copy: Copy) -> None:
    """One copy owed to no row (a staff test copy), on a pooled relay connection; raises the
    relay's PermanentFailure, Deferred or TransientFailure."""
    lane = POOL.take()
    if lane is None:
        raise TransientFailure("every relay connection is busy")
    try:
        failure = lane.mailer.send_many([(copy.envelope_from, copy.to, copy.raw)])[0]
    except BaseException:
        POOL.close(lane)
        raise
    POOL.give(lane)
    if failure is not None:
        raise failure


def backoff_seconds(retries: int) -> float:
    """Exponential backoff with full jitter, capped."""
    settings = get_settings()
    ceiling = min(settings.send_retry_backoff_max, settings.send_retry_backoff * (2**retries))
    return random.uniform(ceiling / 2, ceiling)

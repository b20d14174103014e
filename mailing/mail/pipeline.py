"""The one claim -> build copies -> send -> settle loop every email goes through.

A source says what is owed: it claims a chunk of its rows under row locks in the loop's
transaction, builds each row's copy (or None: the row is no longer owed and is cancelled), and
settles the chunk in the same transaction. Because the locks are held while the chunk is sent,
an unsubscribe either waits for the chunk or cancels it first, and a worker killed mid-chunk
loses its transaction with its connection: those rows are owed again at once. The source is
asked before every chunk whether it is still going (a pause or a cancel), so a stop lets the
loop finish at most the chunk it holds.

The relay's answers, per copy: taken (sent), 5xx (failed), 4xx (deferred: the source sets a
retry time with `backoff_seconds`), or an unreachable relay (the chunk stops there; what was not
attempted stays owed, and the loop ends so the caller can retry after a backoff).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from sqlalchemy.engine import Connection

from mailing.config import get_settings
from mailing.db import get_engine
from mailing.mail import lanes
from mailing.mail.relay import Deferred, PermanentFailure, TransientFailure
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


class Source(Protocol[Row]):
    """What one kind of email owes and how its rows are settled."""

    # Whether its emails count against MAILING_SEND_RATE (bulk mail does; notices do not).
    rated: bool

    def still_going(self, conn: Connection) -> bool: ...
    def claim(self, conn: Connection, limit: int) -> Sequence[Row]: ...
    def copy(self, row: Row) -> Copy | None: ...
    def settle(self, conn: Connection, settled: Settled[Row]) -> None: ...


@dataclass
class Outcome:
    sent: int = 0
    failed: int = 0
    cancelled: int = 0
    deferred: int = 0  # copies the relay answered 4xx for
    unreachable: bool = False  # the relay could not be reached: try again after a backoff
    more: bool = False  # the deadline came with work left: continue in a new task
    stopped: bool = False  # the source said it is no longer going (paused, cancelled)

    def add(self, settled: Settled[Row]) -> None:
        self.sent += len(settled.sent)
        self.failed += len(settled.failed)
        self.cancelled += len(settled.cancelled)
        self.deferred += len(settled.deferred)
        self.unreachable = self.unreachable or bool(settled.unreachable)


def run(source: Source[Row], *, deadline: float | None = None, chunk: int | None = None) -> Outcome:
    """Send what `source` owes, a chunk at a time, until nothing is claimable, the source stops,
    the relay is unreachable or `deadline` (time.monotonic()) passes."""
    size = max(1, chunk or get_settings().send_commit_chunk)
    rate = send_rate() if source.rated else None
    outcome = Outcome()
    while True:
        if deadline is not None and time.monotonic() >= deadline:
            outcome.more = True
            break
        if rate is not None:
            # Wait for the send rate before taking locks, so waiting never blocks an unsubscribe.
            rate.acquire(size)
        # A plain connection, not an ORM session: this loop runs once per 50 emails.
        with get_engine().begin() as conn:
            if not source.still_going(conn):
                outcome.stopped = True
                break
            rows = source.claim(conn, size)
            if not rows:
                break
            settled = _send(source, rows)
            source.settle(conn, settled)
        outcome.add(settled)
        if settled.unreachable:
            break
    return outcome


def _send(source: Source[Row], rows: Sequence[Row]) -> Settled[Row]:
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
    mailer = lanes.thread_mailer()
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
            mailer.close()
            log.warning("relay unreachable (%s); will retry", failure)
    return settled


def send_now(copy: Copy) -> None:
    """One copy owed to no row (a staff test copy), on this thread's relay connection; raises
    the relay's PermanentFailure, Deferred or TransientFailure."""
    failure = lanes.thread_mailer().send_many([(copy.envelope_from, copy.to, copy.raw)])[0]
    if failure is not None:
        raise failure


def backoff_seconds(retries: int) -> float:
    """Exponential backoff with full jitter, capped."""
    settings = get_settings()
    ceiling = min(settings.send_retry_backoff_max, settings.send_retry_backoff * (2**retries))
    return random.uniform(ceiling / 2, ceiling)

"""A send answers after writing one page of its delivery rows; the workers write the rest while
they send (mailing/sending/population.py), and the ledger still ends exact.

The lists here are a little over two pages (POPULATE_CHUNK, 5,000, as deployed: the page size is
not shortened for the tests).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import Session

import mailing.sending.population as population
from mailing import sending
from mailing.db import get_engine, session_scope
from mailing.figures.progress import progress
from mailing.models import utcnow
from mailing.sending.batch import deliver_batch
from mailing.sending.recipients import POPULATE_CHUNK
from tests.support.helpers import count
from tests.support.sending import (
    Sink,
    SinkServer,
    add_subscribers,
    draft,
    start,
    update_row,
    wait_sent,
)

N = 2 * POPULATE_CHUNK + 123


@pytest.fixture
def relay(settings_env: Callable[..., None], worker: Any) -> Iterator[Sink]:
    with SinkServer() as server:
        settings_env(smtp_host="127.0.0.1", smtp_port=server.port)
        yield server.sink


@pytest.fixture
def quiet_relay(settings_env: Callable[..., None], database: str) -> Iterator[Sink]:
    """A sink, and no worker: the test runs the batches itself."""
    with SinkServer() as server:
        settings_env(smtp_host="127.0.0.1", smtp_port=server.port)
        yield server.sink


def _rows(update_id: int) -> int:
    return count("delivery", f"WHERE update_id = {int(update_id)}")


def _set(update_id: int, **values: Any) -> None:
    with get_engine().begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE theme_update SET "
                + ", ".join(f"{k} = :{k}" for k in values)
                + " WHERE id = :id"
            ),
            {**values, "id": update_id},
        )


def _writing(update_id: int) -> bool:
    with Session(get_engine()) as session:
        return population.is_open(session, update_id)


def _lease(update_id: int, at: Any) -> None:
    with get_engine().begin() as conn:
        conn.execute(
            sa.text("UPDATE update_population SET lease_at = :at WHERE update_id = :id"),
            {"at": at, "id": update_id},
        )


def test_the_request_writes_one_page_and_the_workers_the_rest_exactly(relay: Sink) -> None:
    everyone = add_subscribers(N, ["healthy-minds"])
    add_subscribers(40, ["healthy-minds"], status="unsubscribed", prefix="gone")
    update_id = draft(themes=["healthy-minds"])

    def nowhere(update_id: int, tasks: int, countdown: float) -> None:
        pass

    with session_scope() as session:
        request = sending.request_send(session, update_id, None, nowhere)
    assert request.recipients == N  # who it reaches, counted in the request
    assert _rows(update_id) == POPULATE_CHUNK  # only the first page was written
    assert _writing(update_id) and update_row(update_id).status.value == "sending"
    with Session(get_engine()) as session:
        shown = progress(session, update_id)
    # Nothing is shown as done that was not sent: the unwritten rows count as pending.
    assert (shown.recipients, shown.pending, shown.done) == (N, N, 0)

    from workers.enqueue import publish_update_batches

    publish_update_batches(update_id, 2)
    update = wait_sent(update_id)
    relay.wait_for(N, timeout=30)
    got = relay.recipients()
    assert set(got) == set(everyone) and max(got.values()) == 1
    assert (update.recipients, update.sent, update.failed) == (N, N, 0)
    assert not _writing(update_id) and _rows(update_id) == N


def test_a_send_cancelled_while_its_rows_are_written_stops_writing_and_counts_exactly(
    quiet_relay: Sink,
) -> None:
    add_subscribers(N, ["healthy-living"])
    update_id = draft(themes=["healthy-living"])
    assert start(update_id, enqueue=False) == N
    with session_scope() as session:
        sending.cancel(session, update_id, None)
    assert not _writing(update_id)
    assert (
        update_row(update_id).recipients == POPULATE_CHUNK
    )  # the rows that exist: the ledger is exact
    outcome = deliver_batch(update_id)
    assert outcome.stopped and quiet_relay.count() == 0
    assert _rows(update_id) == POPULATE_CHUNK
    assert count("delivery", f"WHERE update_id = {update_id} AND status = 'cancelled'") == (
        POPULATE_CHUNK
    )


def test_someone_who_leaves_before_their_page_is_written_gets_no_row(quiet_relay: Sink) -> None:
    emails = add_subscribers(N, ["healthy-places"])
    update_id = draft(themes=["healthy-places"])
    start(update_id, enqueue=False)
    last = emails[-1]  # on the last page, not yet written
    with get_engine().begin() as conn:
        conn.execute(
            sa.text("UPDATE subscriber SET status = 'unsubscribed' WHERE email = :e"), {"e": last}
        )
    while not deliver_batch(update_id, budget_seconds=60).stopped:
        if update_row(update_id).status.value == "sent":
            break
    update = update_row(update_id)
    assert update.status.value == "sent"
    assert (update.recipients, update.sent) == (N - 1, N - 1)
    assert last not in quiet_relay.recipients()


def test_a_dead_writers_lease_is_taken_over_and_nothing_is_lost(quiet_relay: Sink) -> None:
    add_subscribers(N, ["healthy-children"])
    update_id = draft(themes=["healthy-children"])
    start(update_id, enqueue=False)
    # A writer that took the lease and died: while the lease is fresh nobody else writes, and
    # the batch asks to look again soon instead of finishing the send.
    _lease(update_id, utcnow())
    outcome = deliver_batch(update_id, budget_seconds=60)
    assert outcome.retry_in is not None and not outcome.more
    assert _rows(update_id) == POPULATE_CHUNK and update_row(update_id).status.value == "sending"
    # The lease runs out (its time moved back rather than waited for): the next batch takes over.
    stale = utcnow() - timedelta(seconds=population.LEASE_SECONDS + 1)
    _lease(update_id, stale)
    for _ in range(20):
        if update_row(update_id).status.value == "sent":
            break
        deliver_batch(update_id, budget_seconds=60)
    update = update_row(update_id)
    assert (update.status.value, update.recipients, update.sent) == ("sent", N, N)
    assert max(quiet_relay.recipients().values()) == 1


def test_the_reconciler_re_drives_a_send_whose_rows_are_still_to_write(database: str) -> None:
    add_subscribers(N, ["healthy-minds"])
    update_id = draft(themes=["healthy-minds"])
    start(update_id, enqueue=False)  # the broker lost the batches
    # The written page went out; only unwritten rows are left, and every worker is quiet.
    quiet = utcnow() - timedelta(hours=1)
    with get_engine().begin() as conn:
        conn.execute(
            sa.text("UPDATE delivery SET status = 'sent' WHERE update_id = :u"), {"u": update_id}
        )
    _set(update_id, heartbeat_at=quiet)
    published: list[tuple[int, int]] = []
    from mailing.sending.reconcile import finish_done_sends, redrive_quiet_sends

    with Session(get_engine()) as session:
        assert finish_done_sends(session) == 0  # not finished: rows are still to be written
        assert redrive_quiet_sends(session, utcnow(), lambda u, n, c: published.append((u, n)))
    assert published and published[0][0] == update_id

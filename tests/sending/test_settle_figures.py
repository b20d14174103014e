"""On PostgreSQL a chunk's settle is one statement that also answers the send guard's figures
(the update's status, sent, failed and bounced rows after the chunk), so the guard runs no query
of its own for a chunk that changes nothing for it, and still pauses a send that is over the
line, bounces included."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from mailing.db import get_engine
from mailing.mail import pipeline
from mailing.sending import batch, guard
from tests.support.sending import add_subscribers, draft, start, taken_and_failed, update_row

RECIPIENTS = 400


@pytest.fixture
def sending(database: str) -> int:
    if get_engine().dialect.name != "postgresql":
        pytest.skip("SQLite settles in separate statements; the guard reads its own figures")
    add_subscribers(RECIPIENTS, ["healthy-minds"])
    update_id = draft(themes=["healthy-minds"])
    assert start(update_id, enqueue=False) == RECIPIENTS
    return update_id


def _bounce(update_id: int, k: int) -> None:
    """The update's last k rows taken by the relay and bounced back (not claimed by a chunk)."""
    with get_engine().begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE delivery SET status = 'bounced', sent_at = now() WHERE id IN"
                " (SELECT id FROM delivery WHERE update_id = :u ORDER BY id DESC LIMIT :k)"
            ),
            {"u": update_id, "k": k},
        )


def _settle_a_chunk(update_id: int, size: int) -> Any:
    """Claim `size` rows as a lane does and settle them all sent; the settle's answer."""
    source = batch._Deliveries(update_id, prepared=None)  # type: ignore[arg-type]
    try:
        with get_engine().connect() as conn, conn.begin():
            rows = source.claim(conn, size)
            assert rows is not None and len(rows) == size
            return batch._settle(conn, update_id, pipeline.Settled(sent=list(rows)), 5)
    finally:
        batch.FRONTIER.restart(update_id)


def _statements_during(action: Any) -> tuple[Any, list[str]]:
    seen: list[str] = []
    engine = get_engine()

    def capture(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    sa.event.listen(engine, "before_cursor_execute", capture)
    try:
        return action(), seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", capture)


def test_the_settle_answers_the_figures_after_the_chunk_bounces_included(sending):
    _bounce(sending, 7)  # 7 copies the relay took, bounced back: attempted, and bounced
    assert _settle_a_chunk(sending, 50) == ("sending", guard.Figures(57, 0, 7))
    assert _settle_a_chunk(sending, 30) == ("sending", guard.Figures(87, 0, 7))
    assert taken_and_failed(sending) == (87, 0)


def test_a_clean_chunk_within_the_limit_costs_the_guard_no_query(sending):
    figures = _settle_a_chunk(sending, 50)
    paused, seen = _statements_during(lambda: guard.after_chunk(sending, [], figures))
    assert paused is False and seen == []
    # Without the settle's figures (SQLite) it reads them itself.
    paused, seen = _statements_during(lambda: guard.after_chunk(sending, []))
    assert paused is False and seen


def test_figures_over_the_line_from_bounces_alone_pause_the_send(sending):
    """The relay took every copy, but hard bounces came back: the settle's figures show it and
    the guard pauses the send at once."""
    for _ in range(4):
        _settle_a_chunk(sending, 50)
    _bounce(sending, 40)  # 40 of 240 attempted bounced hard: 17 %, over 5 %
    figures = _settle_a_chunk(sending, 50)
    assert figures == ("sending", guard.Figures(290, 0, 40))
    assert guard.after_chunk(sending, [], figures) is True
    row = update_row(sending)
    assert row.status.value == "paused" and "bounced hard (40)" in (row.error or "")


def _connection_in_another_shard(taken: set[int]) -> Any:
    """A connection whose backend is in none of these count shards (0020: pid modulo 16)."""
    spare = []
    try:
        for _ in range(64):
            conn = get_engine().connect()
            shard = conn.execute(sa.text("SELECT mod(pg_backend_pid(), 16)")).scalar()
            conn.commit()
            if shard not in taken:
                return conn
            spare.append(conn)
        raise AssertionError("no connection in another shard")
    finally:
        for conn in spare:
            conn.close()


def test_chunks_settling_at_once_in_different_shards_do_not_wait_for_each_other(sending):
    """Migration 0020: a settle writes its own shard of the kept counts and not the update's row
    (but for the heartbeat, once a second a task), so a chunk settled and not yet committed
    holds nothing another lane's settle needs. Before it, every settle queued on the update's
    row: the second one here waited for the first's commit (the lock timeout fails the test)."""
    source = batch._Deliveries(sending, prepared=None)  # type: ignore[arg-type]
    first = get_engine().connect()
    try:
        shard = first.execute(sa.text("SELECT mod(pg_backend_pid(), 16)")).scalar()
        first.commit()
        second = _connection_in_another_shard({shard})
        try:
            with first.begin():
                rows = source.claim(first, 50)
                assert rows
                # The first settle of the task, with its heartbeat: it writes the update's row.
                batch._settle(first, sending, pipeline.Settled(sent=list(rows)), 5, beat=True)
                with second.begin():
                    second.execute(sa.text("SET LOCAL lock_timeout = '10s'"))
                    more = source.claim(second, 50)
                    assert more and not {r.delivery_id for r in more} & {
                        r.delivery_id for r in rows
                    }
                    answer = batch._settle(
                        second, sending, pipeline.Settled(sent=list(more)), 5, beat=False
                    )
                # It committed while the first was still open; it saw only its own chunk.
                assert answer == ("sending", guard.Figures(50, 0, 0))
        finally:
            second.close()
    finally:
        first.close()
        batch.FRONTIER.restart(sending)
    assert taken_and_failed(sending) == (100, 0)

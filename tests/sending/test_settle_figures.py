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
from tests.support.sending import add_subscribers, draft, start, update_row

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
    with get_engine().begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE delivery SET status = 'bounced' WHERE id IN (SELECT id FROM delivery"
                " WHERE update_id = :u ORDER BY id DESC LIMIT :k)"
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
    _bounce(sending, 7)
    assert _settle_a_chunk(sending, 50) == ("sending", guard.Figures(50, 0, 7))
    assert _settle_a_chunk(sending, 30) == ("sending", guard.Figures(80, 0, 7))
    assert update_row(sending).sent == 80


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
    _bounce(sending, 40)  # 40 of 200 attempted bounced hard: 20 %, over 5 %
    figures = _settle_a_chunk(sending, 50)
    assert figures == ("sending", guard.Figures(250, 0, 40))
    assert guard.after_chunk(sending, [], figures) is True
    row = update_row(sending)
    assert row.status.value == "paused" and "bounced hard (40)" in (row.error or "")

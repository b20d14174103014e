"""The claim of a commit chunk reads about a chunk's rows, however large the send.

Right after start_send writes an update's deliveries the table has no statistics for them; the
claim once walked every pending row of the update through (update_id, status) and filtered on
the rest (25 ms a chunk, half the CPU of a 100k send). The partial index ix_delivery_pending
(an update's pending rows in id order) lets the claim stop after `limit` rows. These tests read
the database's own plan for the claim statement the send actually executes.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa

from mailing.db import get_engine
from mailing.models import utcnow
from mailing.sending import batch
from mailing.states import DeliveryTransitions, transition
from tests.support.sending import add_subscribers, draft, start

RECIPIENTS = 3000
CHUNK = 50


def _claim_statement(update_id: int) -> tuple[str, Any]:
    """The SQL and parameters of the claim's SELECT, as the send executes it."""
    seen: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, params: Any, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "delivery" in statement:
            seen.append((statement, params))

    engine = get_engine()
    sa.event.listen(engine, "before_cursor_execute", capture)
    try:
        with engine.connect() as conn, conn.begin() as transaction:
            assert len(batch._claim(conn, update_id, CHUNK, utcnow())) == CHUNK
            transaction.rollback()
    finally:
        sa.event.remove(engine, "before_cursor_execute", capture)
    return seen[-1]


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan]
    for child in plan.get("Plans", []):
        found.extend(_nodes(child))
    return found


@pytest.fixture
def fresh_send(database: str) -> int:
    add_subscribers(RECIPIENTS, ["healthy-minds"])
    update_id = draft(themes=["healthy-minds"])
    assert start(update_id, enqueue=False) == RECIPIENTS
    return update_id


def _settle_most(update_id: int) -> None:
    """Mark all but the last chunk's worth of deliveries settled, as late in a send."""
    with get_engine().begin() as conn:
        last = conn.execute(
            sa.text(
                "SELECT id FROM delivery WHERE update_id = :u ORDER BY id DESC LIMIT 1 OFFSET :k"
            ),
            {"u": update_id, "k": CHUNK * 2},
        ).scalar_one()
        transition(
            conn,
            batch.DELIVERY,
            DeliveryTransitions.SEND,
            sa.and_(batch.DELIVERY.c.update_id == update_id, batch.DELIVERY.c.id <= last),
        )


@pytest.mark.parametrize("late", [False, True], ids=["first-chunk", "late-in-the-send"])
def test_the_claim_reads_about_one_chunk_through_the_pending_index(fresh_send, late):
    if late:
        _settle_most(fresh_send)
    statement, params = _claim_statement(fresh_send)
    engine = get_engine()
    with engine.connect() as conn, conn.begin() as transaction:
        if engine.dialect.name == "postgresql":
            raw = conn.exec_driver_sql(
                "EXPLAIN (ANALYZE, FORMAT JSON) " + statement, params
            ).scalar_one()
            plan = (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]
            scans = [n for n in _nodes(plan) if n.get("Relation Name") == "delivery"]
            assert [n.get("Index Name") for n in scans] == ["ix_delivery_pending"], scans
            read = sum(n["Actual Rows"] + n.get("Rows Removed by Filter", 0) for n in scans)
            assert read <= CHUNK, scans
        else:
            rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params).all()
            details = " | ".join(str(r[-1]) for r in rows)
            assert "USING INDEX ix_delivery_pending" in details, details
            assert "TEMP B-TREE" not in details.upper(), details  # no sort of every pending row
        transaction.rollback()

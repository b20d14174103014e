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


def _claim_statement(update_id: int, after: int = 0) -> tuple[str, Any]:
    """The SQL and parameters of the claim's SELECT, as the send executes it."""
    seen: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, params: Any, *args: Any) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "WITH")) and "delivery" in statement:
            seen.append((statement, params))

    engine = get_engine()
    sa.event.listen(engine, "before_cursor_execute", capture)
    try:
        with engine.connect() as conn, conn.begin() as transaction:
            assert len(batch._claim(conn, update_id, CHUNK, utcnow(), after)) == CHUNK
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


def _plan(statement: str, params: Any) -> dict[str, Any]:
    with get_engine().connect() as conn, conn.begin() as transaction:
        raw = conn.exec_driver_sql("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, params).scalar()
        transaction.rollback()
    return (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]


def _loops(plan: dict[str, Any], relation: str) -> int:
    """How many rows of `relation` the plan read (each scan's rows times its loops)."""
    return sum(
        (n["Actual Rows"] + n.get("Rows Removed by Filter", 0)) * n.get("Actual Loops", 1)
        for n in _nodes(plan)
        if n.get("Relation Name") == relation
    )


@pytest.mark.parametrize("frontier", [False, True], ids=["from-the-first", "past-the-frontier"])
def test_a_claim_beside_other_lanes_chunks_reads_the_subscribers_of_its_own_chunk_only(
    fresh_send, frontier
):
    """Other lanes hold chunks (their transactions open): the claim skips their rows without
    looking up their subscribers, and, started past this process's frontier, without walking
    them at all."""
    if get_engine().dialect.name != "postgresql":
        pytest.skip("SQLite has one writer: one lane")
    engine = get_engine()
    held = [engine.connect() for _ in range(3)]
    try:
        for conn in held:
            conn.begin()
            source = batch._Deliveries(fresh_send, prepared=None)  # type: ignore[arg-type]
            rows = source.claim(conn, CHUNK)
            assert rows is not None and len(rows) == CHUNK
        assert batch.FRONTIER.get(fresh_send) >= 3 * CHUNK
        after = batch.FRONTIER.get(fresh_send) if frontier else 0
        statement, params = _claim_statement(fresh_send, after)
        plan = _plan(statement, params)
        assert _loops(plan, "subscriber") <= CHUNK, plan
        if frontier:
            assert _loops(plan, "delivery") <= CHUNK, plan
        else:  # it walks past the 3 held chunks, but joins only its own
            assert _loops(plan, "delivery") >= 4 * CHUNK, plan
    finally:
        for conn in held:
            conn.close()
        batch.FRONTIER.restart(fresh_send)


def test_rows_released_behind_the_frontier_are_claimed_once_nothing_is_past_it(fresh_send):
    """The frontier is a hint: a chunk given back below it (its worker killed, its transaction
    lost) is claimed again once the rows past the frontier are gone."""
    if get_engine().dialect.name != "postgresql":
        pytest.skip("the frontier is PostgreSQL's (SQLite claims from the first row)")
    engine = get_engine()
    source = batch._Deliveries(fresh_send, prepared=None)  # type: ignore[arg-type]
    try:
        with engine.connect() as conn, conn.begin() as lost:
            first = source.claim(conn, CHUNK)
            assert first is not None
            lost.rollback()  # as a killed worker's transaction
        seen: list[int] = []
        with engine.connect() as conn:
            while True:
                with conn.begin():
                    rows = source.claim(conn, CHUNK * 10)
                    assert rows is not None
                    if not rows:
                        break
                    seen.extend(r.delivery_id for r in rows)
                    transition(
                        conn,
                        batch.DELIVERY,
                        DeliveryTransitions.SEND,
                        batch.DELIVERY.c.id.in_([r.delivery_id for r in rows]),
                    )
        assert {r.delivery_id for r in first} <= set(seen)
        assert len(seen) == len(set(seen)) == RECIPIENTS
        # the first chunk came again only after everything past it
        assert seen.index(first[0].delivery_id) >= RECIPIENTS - CHUNK
    finally:
        batch.FRONTIER.restart(fresh_send)

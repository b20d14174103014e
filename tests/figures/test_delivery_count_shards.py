"""Migration 0020: delivery_count by shard. Rows changed from connections in different shards
(PostgreSQL: backend pid modulo 16) add to different rows, which every reader sums; the
downgrade folds the shards back into one row per update and status, and the upgrade again
keeps them exact. Both databases (SQLite writes shard 0)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import command

from mailing.db import get_engine
from mailing.figures import kept_counts
from tests.conftest import DATABASE_URL
from tests.support.sending import add_subscribers, draft, start

SHARD = "SELECT mod(pg_backend_pid(), 16)"


def _real(update_id: int) -> dict[str, int]:
    with get_engine().connect() as conn:
        rows = conn.execute(
            sa.text("SELECT status, count(*) FROM delivery WHERE update_id = :u GROUP BY 1"),
            {"u": update_id},
        )
        return {str(status): int(n) for status, n in rows}


def _kept(update_id: int) -> dict[str, int]:
    with get_engine().connect() as conn:
        return {s.value: n for s, n in kept_counts.deliveries_of(conn, update_id).items()}


def _connections(k: int) -> list[Any]:
    """k connections, each in a shard of its own on PostgreSQL (any k on SQLite)."""
    found: dict[Any, Any] = {}
    spare = []
    postgres = get_engine().dialect.name == "postgresql"
    try:
        while len(found) < k:
            conn = get_engine().connect()
            shard = conn.execute(sa.text(SHARD)).scalar() if postgres else len(found)
            conn.commit()
            if shard in found:
                spare.append(conn)
            else:
                found[shard] = conn
            assert len(spare) < 64
        return list(found.values())
    finally:
        for conn in spare:
            conn.close()


def test_changes_from_several_shards_stay_exact_through_the_downgrade_and_back(
    database: str,
) -> None:
    from mailing import migrate

    add_subscribers(30, ["healthy-places"], prefix="shard")
    update_id = draft(themes=["healthy-places"])
    assert start(update_id, enqueue=False) == 30
    conns = _connections(3)
    try:
        for i, (conn, status) in enumerate(zip(conns, ("sent", "failed", "cancelled"))):
            with conn.begin():
                conn.execute(
                    sa.text(
                        "UPDATE delivery SET status = :s WHERE id IN (SELECT id FROM delivery "
                        "WHERE update_id = :u AND status = 'pending' ORDER BY id LIMIT :k)"
                    ),
                    {"s": status, "u": update_id, "k": 5 + i},
                )
    finally:
        for conn in conns:
            conn.close()
    expected = {"sent": 5, "failed": 6, "cancelled": 7, "pending": 12}
    assert _real(update_id) == expected == _kept(update_id)
    with get_engine().connect() as conn:
        rows = conn.execute(sa.text("SELECT count(*) FROM delivery_count")).scalar_one()
    if get_engine().dialect.name == "postgresql":
        assert rows > len(expected)  # the shards' own rows (the pending row of each, too)

    config = migrate.alembic_config(DATABASE_URL)
    command.downgrade(config, "0018")
    try:
        with get_engine().connect() as conn:
            folded = conn.execute(
                sa.text("SELECT status, n FROM delivery_count WHERE update_id = :u AND n <> 0"),
                {"u": update_id},
            )
            assert {str(s): int(n) for s, n in folded} == expected
            # The 0014 triggers are back: a change is counted in the one row.
            conn.execute(
                sa.text(
                    "UPDATE delivery SET status = 'sent' WHERE update_id = :u AND "
                    "status = 'pending'"
                ),
                {"u": update_id},
            )
            conn.commit()
            after = conn.execute(
                sa.text("SELECT n FROM delivery_count WHERE update_id = :u AND status = 'sent'"),
                {"u": update_id},
            ).scalar_one()
            assert after == 17
    finally:
        command.upgrade(config, "head")
    assert _real(update_id) == {"sent": 17, "failed": 6, "cancelled": 7} == _kept(update_id)

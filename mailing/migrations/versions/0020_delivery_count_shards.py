"""kept delivery counts by shard: no settled chunk waits for another on the update's row

Before this, every statement that changed an update's delivery rows took the update's row
(FOR NO KEY UPDATE, 0014 and 0019's delivery side) and then its one `delivery_count` row per
status, and every settled chunk also wrote the update's running counters: the 48 lanes of a send
queued on one row, each holding it to its commit. At 5 ms from the relay they formed convoys
(a chunk's settle waited 60-250 ms at the start of a send, bench/send.py); a send of 10,000
reached 0.72-0.75 of the 32-connection client, 0.78-0.87 with the wait removed.

Now `delivery_count` has a `shard` column as subscriber_count has: on PostgreSQL each
connection adds to the rows of its shard (backend pid modulo 16) under the shard's advisory
lock, key 140024 (taken only by statements that move a count; not 0014's 140023, which the
subscriber counts take: an unsubscribe holds that one while it waits for a chunk's rows, and a
lane settling that chunk must not wait for it). Rows of a shard are written only under its
lock, so two writers never take count rows in crossed orders. 0019's delivery side moves from
the update's shard -1 to shards -1 to -16 (-1 - the connection's shard), under the same lock.
An update's row is only KEY SHARE locked where a deleted update must be skipped (an update
deleted with its rows). Readers sum over the shards. SQLite (one writer): shard 0, as before.

Revision ID: 0020
Revises: 0018
"""

# ruff: noqa: S608 (the SQL below is our own, built from constants: no input in it)

import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

from alembic import op

revision: str = "0020"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SHARDS = 16
SHARD = f"mod(pg_backend_pid(), {SHARDS})"
LOCK = f"PERFORM pg_advisory_xact_lock(140024, {SHARD});"


def _sibling(name: str) -> ModuleType:
    """An earlier revision's module (their SQL is reused, not copied)."""
    path = Path(__file__).with_name(name)
    spec = importlib.util.spec_from_file_location(f"_migration_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- PostgreSQL -------------------------------------------------------------------------------


def _add(deltas: str) -> str:
    """Adds the deltas of a SELECT (update_id, status, k) to this connection's shard, under the
    shard's lock, for updates that still exist; nothing (and no lock) if they cancel out."""
    grouped = f"SELECT update_id, status, sum(k) AS k FROM ({deltas}) x GROUP BY 1, 2"
    return f"""
        IF EXISTS (SELECT 1 FROM ({grouped}) g WHERE k <> 0) THEN
            {LOCK}
            WITH d AS ({grouped} HAVING sum(k) <> 0),
            live AS (SELECT id FROM theme_update WHERE id IN (SELECT update_id FROM d)
                     ORDER BY id FOR KEY SHARE)
            INSERT INTO delivery_count (update_id, status, shard, n)
            SELECT d.update_id, d.status, {SHARD}, d.k FROM d JOIN live ON live.id = d.update_id
            ORDER BY 1, 2
            ON CONFLICT (update_id, status, shard) DO UPDATE SET n = delivery_count.n + EXCLUDED.n;
        END IF;"""


_CHANGED = """FROM new_rows n JOIN old_rows o USING (id)
            WHERE n.status IS DISTINCT FROM o.status OR n.update_id <> o.update_id"""

PG_DELIVERY = f"""
CREATE OR REPLACE FUNCTION delivery_count_kept() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN{_add("SELECT update_id, status, 1 AS k FROM new_rows")}
    ELSIF TG_OP = 'DELETE' THEN{_add("SELECT update_id, status, -1 AS k FROM old_rows")}
    ELSE{
    _add(
        f"SELECT n.update_id, n.status, 1 AS k {_CHANGED} "
        f"UNION ALL SELECT o.update_id, o.status, -1 {_CHANGED}"
    )
}
    END IF;
    RETURN NULL;
END $$;
"""


def _left_add(deltas: str) -> str:
    """0019's delivery side: adds the deltas (update_id, k) to shard -1 - this connection's
    shard, under the same lock, for updates that still exist."""
    grouped = f"SELECT update_id, sum(k) AS k FROM ({deltas}) x GROUP BY 1"
    return f"""
        IF EXISTS (SELECT 1 FROM ({grouped}) g WHERE k <> 0) THEN
            {LOCK}
            WITH d AS ({grouped} HAVING sum(k) <> 0),
            u AS (SELECT id FROM theme_update WHERE id IN (SELECT update_id FROM d)
                  ORDER BY id FOR KEY SHARE)
            INSERT INTO update_left_count (update_id, shard, n)
            SELECT d.update_id, -1 - {SHARD}, d.k FROM d JOIN u ON u.id = d.update_id ORDER BY 1
            ON CONFLICT (update_id, shard) DO UPDATE SET n = update_left_count.n + EXCLUDED.n;
        END IF;"""


def _pg_left(add: Callable[[str], str], counted: Callable[[str, int], str]) -> str:
    """left_count_delivery with `add` writing 0019's `counted` contributions (0019's own
    _delivery_add for the downgrade, _left_add here)."""
    both = counted("new_rows", 1) + " UNION ALL " + counted("old_rows", -1)
    return f"""
CREATE OR REPLACE FUNCTION left_count_delivery() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN{add(counted("new_rows", 1))}
    ELSIF TG_OP = 'DELETE' THEN{add(counted("old_rows", -1))}
    ELSE{add(both)}
    END IF;
    RETURN NULL;
END $$;
"""


# --- SQLite -------------------------------------------------------------------------------------

SQLITE_DELIVERY = ("delivery_count_insert", "delivery_count_update", "delivery_count_delete")


def _sqlite_triggers(kept: ModuleType, sharded: bool) -> list[str]:
    """0014's delivery_count row triggers, writing shard 0 when the table has the column."""
    if not sharded:
        return [t for t in kept.SQLITE if any(f"TRIGGER {n} " in t for n in SQLITE_DELIVERY)]

    def d(values: str, k: str) -> str:
        return str(
            kept._sqlite_add("delivery_count", "update_id, status, shard", values + ", 0", k)
        )

    return [
        f"""CREATE TRIGGER delivery_count_insert AFTER INSERT ON delivery BEGIN
        {d("NEW.update_id, NEW.status", "1")} END""",
        f"""CREATE TRIGGER delivery_count_update AFTER UPDATE OF status, update_id ON delivery
        WHEN OLD.status IS NOT NEW.status OR OLD.update_id IS NOT NEW.update_id BEGIN
        {d("NEW.update_id, NEW.status", "1")} {d("OLD.update_id, OLD.status", "-1")} END""",
        f"""CREATE TRIGGER delivery_count_delete AFTER DELETE ON delivery BEGIN
        {d("OLD.update_id, OLD.status", "-1")} END""",
    ]


def upgrade() -> None:
    kept = _sibling("0014_kept_counts.py")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE delivery_count ADD COLUMN shard integer NOT NULL DEFAULT 0")
        op.execute("ALTER TABLE delivery_count DROP CONSTRAINT delivery_count_pkey")
        op.execute("ALTER TABLE delivery_count ADD PRIMARY KEY (update_id, status, shard)")
        op.execute("ALTER TABLE delivery_count ALTER COLUMN shard DROP DEFAULT")
        op.execute(PG_DELIVERY)
        op.execute(_pg_left(_left_add, _sibling("0019_left_after_counts.py")._counted))
        return
    # SQLite validates triggers when a table is renamed: drop them first.
    for name in SQLITE_DELIVERY:
        op.execute(f"DROP TRIGGER IF EXISTS {name}")
    _sqlite_rebuild(["update_id", "status", "shard"], "0")
    for statement in _sqlite_triggers(kept, sharded=True):
        op.execute(statement)


def _sqlite_rebuild(key: list[str], shard: str | None) -> None:
    """delivery_count made anew with primary key `key` (and a shard column, filled with
    `shard`, unless None), its rows copied (summed per key)."""
    shard_column = "shard INTEGER NOT NULL, " if shard is not None else ""
    op.execute(
        "CREATE TABLE delivery_count_new (update_id INTEGER NOT NULL, "
        f"status VARCHAR(16) NOT NULL, {shard_column}n BIGINT NOT NULL, "
        f"PRIMARY KEY ({', '.join(key)}), "
        "FOREIGN KEY(update_id) REFERENCES theme_update (id) ON DELETE CASCADE)"
    )
    if shard is not None:
        op.execute(
            "INSERT INTO delivery_count_new (update_id, status, shard, n) "
            f"SELECT update_id, status, {shard}, n FROM delivery_count"
        )
    else:
        op.execute(
            "INSERT INTO delivery_count_new (update_id, status, n) "
            "SELECT update_id, status, sum(n) FROM delivery_count GROUP BY 1, 2"
        )
    op.execute("DROP TABLE delivery_count")
    op.execute("ALTER TABLE delivery_count_new RENAME TO delivery_count")


_FOLD = """
    INSERT INTO delivery_count (update_id, status, shard, n)
    SELECT update_id, status, 0, sum(n) FROM delivery_count WHERE shard <> 0 GROUP BY 1, 2
    ON CONFLICT (update_id, status, shard) DO UPDATE SET n = delivery_count.n + EXCLUDED.n"""
_LEFT_FOLD = """
    INSERT INTO update_left_count (update_id, shard, n)
    SELECT update_id, -1, sum(n) FROM update_left_count WHERE shard < -1 GROUP BY 1
    ON CONFLICT (update_id, shard) DO UPDATE SET n = update_left_count.n + EXCLUDED.n"""


def downgrade() -> None:
    kept = _sibling("0014_kept_counts.py")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_FOLD)
        op.execute("DELETE FROM delivery_count WHERE shard <> 0")
        op.execute(_LEFT_FOLD)
        op.execute("DELETE FROM update_left_count WHERE shard < -1")
        op.execute("ALTER TABLE delivery_count DROP CONSTRAINT delivery_count_pkey")
        op.execute("ALTER TABLE delivery_count DROP COLUMN shard")
        op.execute("ALTER TABLE delivery_count ADD PRIMARY KEY (update_id, status)")
        function = kept.PG_DELIVERY.split("CREATE TRIGGER", 1)[0]
        op.execute(function.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))
        left = _sibling("0019_left_after_counts.py")
        op.execute(_pg_left(left._delivery_add, left._counted))
        return
    for name in SQLITE_DELIVERY:
        op.execute(f"DROP TRIGGER IF EXISTS {name}")
    _sqlite_rebuild(["update_id", "status"], None)
    for statement in _sqlite_triggers(kept, sharded=False):
        op.execute(statement)

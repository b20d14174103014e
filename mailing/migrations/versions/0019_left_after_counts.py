"""kept counts: who left after each update's copy reached them

update_left_count(update_id, shard, n), summed over shards, is exactly what the update's page
counted with a join (figures/deliverability.py before this): the update's deliveries with
status 'sent' whose subscriber is now 'unsubscribed' with unsubscribed_at >= the delivery's
sent_at. The database keeps it as either side changes, whichever code changes it:

- a delivery row inserted, deleted, or changing status, sent_at, subscriber or update: its
  contribution before (-1) and after (+1), read against the subscriber's row as it is then.
  On PostgreSQL these go to the update's shard -1, under the lock of the update's row that
  delivery_count (0014) takes for the same statement, in id order: settling workers of one
  update already queue on that row, so no new wait and no crossed order. A settle (pending to
  sent, 50 rows) with none of its subscribers unsubscribed writes nothing.
- a subscriber's status or unsubscribed_at changing, from or to 'unsubscribed': their own
  'sent' deliveries with sent_at <= the old (-1) and new (+1) unsubscribed_at, so the work is
  bounded by that subscriber's history. On PostgreSQL these go to the connection's shard
  (backend pid modulo 16) under the shard's advisory lock that subscriber_count (0014) takes
  in the same statement: concurrent unsubscribes never queue on one row, never deadlock.
- a subscriber deleted while 'unsubscribed': a BEFORE DELETE row trigger deletes their 'sent'
  deliveries first, counted out while the subscriber's row can still be read (erasure deletes
  the deliveries itself first anyway).

PostgreSQL: statement-level AFTER triggers with transition tables. SQLite: row triggers. The
count is filled from the existing rows here with one grouped join.

Revision ID: 0019
Revises: 0017
"""

# ruff: noqa: S608 (the SQL below is our own, built from constants: no input in it)

from collections.abc import Sequence

from alembic import op

import sqlalchemy as sa

revision: str = "0019"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SHARDS = 16  # as 0014's subscriber_count, whose advisory lock key this shares
DELIVERY_SHARD = -1
SENT, UNSUBSCRIBED = "'sent'", "'unsubscribed'"


def _counted(rows: str, sign: int) -> str:
    """The (update_id, k) contributions of the delivery rows of `rows` that count. Each `sent`
    row's subscriber is read by its id alone (a subquery per row, on the primary key): a chunk's
    50 rows are 50 lookups, whatever the planner guesses of how many are unsubscribed (with a
    status condition it may walk ix_subscriber_status: 1,000 rows a lookup at 1 % gone)."""
    return f"""
            SELECT update_id, k FROM (
                SELECT r.update_id, {sign} AS k, (
                    SELECT s.status = {UNSUBSCRIBED} AND s.unsubscribed_at >= r.sent_at
                    FROM subscriber s WHERE s.id = r.subscriber_id
                ) AS counts FROM {rows} r WHERE r.status = {SENT} OFFSET 0
            ) c WHERE counts"""


def _delivery_add(deltas: str) -> str:
    """Adds the deltas to shard -1 of updates that still exist, their rows locked in id order."""
    return f"""
        WITH d AS (SELECT update_id, sum(k) AS k FROM ({deltas}) x GROUP BY 1 HAVING sum(k) <> 0),
        u AS (SELECT id FROM theme_update WHERE id IN (SELECT update_id FROM d)
              ORDER BY id FOR NO KEY UPDATE)
        INSERT INTO update_left_count (update_id, shard, n)
        SELECT d.update_id, {DELIVERY_SHARD}, d.k FROM d JOIN u ON u.id = d.update_id ORDER BY 1
        ON CONFLICT (update_id, shard) DO UPDATE SET n = update_left_count.n + EXCLUDED.n;"""


# A subscriber row whose figure may move: from or to 'unsubscribed', status or time changed.
_MOVED = f"""
            FROM new_rows n JOIN old_rows o USING (id)
            WHERE (n.status = {UNSUBSCRIBED} OR o.status = {UNSUBSCRIBED})
            AND (n.status, n.unsubscribed_at) IS DISTINCT FROM (o.status, o.unsubscribed_at)"""

PG = f"""
CREATE FUNCTION left_count_delivery() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN{_delivery_add(_counted("new_rows", 1))}
    ELSIF TG_OP = 'DELETE' THEN{_delivery_add(_counted("old_rows", -1))}
    ELSE{_delivery_add(_counted("new_rows", 1) + " UNION ALL " + _counted("old_rows", -1))}
    END IF;
    RETURN NULL;
END $$;
CREATE FUNCTION left_count_subscriber() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 {_MOVED}) THEN
        RETURN NULL;
    END IF;
    PERFORM pg_advisory_xact_lock(140023, mod(pg_backend_pid(), {SHARDS}));
    INSERT INTO update_left_count (update_id, shard, n)
    SELECT dl.update_id, mod(pg_backend_pid(), {SHARDS}), sum(c.k) FROM (
        SELECT n.id, n.unsubscribed_at AS at, 1 AS k {_MOVED} AND n.status = {UNSUBSCRIBED}
        UNION ALL
        SELECT o.id, o.unsubscribed_at, -1 {_MOVED} AND o.status = {UNSUBSCRIBED}
    ) c JOIN delivery dl ON dl.subscriber_id = c.id
    WHERE dl.status = {SENT} AND c.at >= dl.sent_at
    GROUP BY 1 HAVING sum(c.k) <> 0 ORDER BY 1
    ON CONFLICT (update_id, shard) DO UPDATE SET n = update_left_count.n + EXCLUDED.n;
    RETURN NULL;
END $$;
CREATE FUNCTION left_count_deliveries_first() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status = {UNSUBSCRIBED} THEN
        DELETE FROM delivery WHERE subscriber_id = OLD.id AND status = {SENT};
    END IF;
    RETURN OLD;
END $$;
CREATE TRIGGER left_count_delivery_insert AFTER INSERT ON delivery
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION left_count_delivery();
CREATE TRIGGER left_count_delivery_update AFTER UPDATE ON delivery
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION left_count_delivery();
CREATE TRIGGER left_count_delivery_delete AFTER DELETE ON delivery
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION left_count_delivery();
CREATE TRIGGER left_count_subscriber_update AFTER UPDATE ON subscriber
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION left_count_subscriber();
CREATE TRIGGER left_count_deliveries_first BEFORE DELETE ON subscriber
    FOR EACH ROW EXECUTE FUNCTION left_count_deliveries_first();
"""

PG_TRIGGERS = {
    "left_count_delivery_insert": "delivery",
    "left_count_delivery_update": "delivery",
    "left_count_delivery_delete": "delivery",
    "left_count_subscriber_update": "subscriber",
    "left_count_deliveries_first": "subscriber",
}
PG_FUNCTIONS = ("left_count_delivery", "left_count_subscriber", "left_count_deliveries_first")

# --- SQLite: row triggers -----------------------------------------------------------------------


def _sqlite_add(row: str, sign: int) -> str:
    """Adds `sign` to the update of delivery row `row` (NEW or OLD) if it counts."""
    return f"""
        INSERT INTO update_left_count (update_id, shard, n)
        SELECT {row}.update_id, 0, {sign} FROM subscriber s
        WHERE s.id = {row}.subscriber_id AND {row}.status = {SENT} AND s.status = {UNSUBSCRIBED}
        AND s.unsubscribed_at >= {row}.sent_at
        AND EXISTS (SELECT 1 FROM theme_update WHERE id = {row}.update_id)
        ON CONFLICT (update_id, shard) DO UPDATE SET n = n + excluded.n;"""


def _sqlite_subscriber(row: str, sign: int) -> str:
    """Adds `sign` to the update of each of subscriber `row`'s deliveries that count."""
    return f"""
        INSERT INTO update_left_count (update_id, shard, n)
        SELECT update_id, 0, {sign} FROM delivery
        WHERE subscriber_id = {row}.id AND status = {SENT} AND {row}.status = {UNSUBSCRIBED}
        AND {row}.unsubscribed_at >= sent_at
        ON CONFLICT (update_id, shard) DO UPDATE SET n = n + excluded.n;"""


SQLITE = {
    "left_count_delivery_insert": f"""AFTER INSERT ON delivery WHEN NEW.status = {SENT} BEGIN
        {_sqlite_add("NEW", 1)} END""",
    "left_count_delivery_update": f"""AFTER UPDATE OF status, sent_at, subscriber_id, update_id
        ON delivery WHEN OLD.status = {SENT} OR NEW.status = {SENT} BEGIN
        {_sqlite_add("OLD", -1)} {_sqlite_add("NEW", 1)} END""",
    "left_count_delivery_delete": f"""AFTER DELETE ON delivery WHEN OLD.status = {SENT} BEGIN
        {_sqlite_add("OLD", -1)} END""",
    "left_count_subscriber_update": f"""AFTER UPDATE OF status, unsubscribed_at ON subscriber
        WHEN (OLD.status = {UNSUBSCRIBED} OR NEW.status = {UNSUBSCRIBED})
        AND (OLD.status IS NOT NEW.status OR OLD.unsubscribed_at IS NOT NEW.unsubscribed_at)
        BEGIN {_sqlite_subscriber("OLD", -1)} {_sqlite_subscriber("NEW", 1)} END""",
    "left_count_deliveries_first": f"""BEFORE DELETE ON subscriber
        WHEN OLD.status = {UNSUBSCRIBED} BEGIN
        DELETE FROM delivery WHERE subscriber_id = OLD.id AND status = {SENT}; END""",
}

FILL = f"""
INSERT INTO update_left_count (update_id, shard, n)
SELECT d.update_id, 0, count(*) FROM delivery d JOIN subscriber s ON s.id = d.subscriber_id
WHERE d.status = {SENT} AND s.status = {UNSUBSCRIBED} AND s.unsubscribed_at >= d.sent_at
GROUP BY d.update_id"""


def upgrade() -> None:
    op.create_table(
        "update_left_count",
        sa.Column("update_id", sa.Integer(), nullable=False),
        sa.Column("shard", sa.Integer(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["update_id"], ["theme_update.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("update_id", "shard"),
    )
    # Triggers first, then the fill: on PostgreSQL creating them locks out writers of both
    # tables until this transaction commits, so no change falls between the fill and them.
    if op.get_bind().dialect.name == "postgresql":
        op.execute(PG)
    else:
        for name, body in SQLITE.items():
            op.execute(f"CREATE TRIGGER {name} {body}")
    op.execute(FILL)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for name, table in PG_TRIGGERS.items():
            op.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
        for function in PG_FUNCTIONS:
            op.execute(f"DROP FUNCTION IF EXISTS {function}()")
    else:
        for name in SQLITE:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.drop_table("update_left_count")

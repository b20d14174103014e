"""kept counts: deliveries of each update by status, subscribers by theme and status

No request counts rows of the subscriber or delivery tables (issue 23): the database keeps the
counts as rows change, in the same transaction, whichever code changed them (a settle, a
cancel, a bounce, an erasure's cascade, the retention purge):

- delivery_count(update_id, status, n): an update's deliveries by status.
- subscriber_count(theme, status, shard, n): subscribers by status (theme "" = every
  subscriber, each once) and by theme and status. On PostgreSQL each connection adds to the
  row of its shard (its backend pid modulo 16), so concurrent sign-up batches never queue on
  one hot row; a reader sums the shards.

PostgreSQL: statement-level AFTER triggers with transition tables (one aggregated upsert a
statement, not one a row); a subscriber's themes are deleted (and counted out) by a BEFORE
DELETE row trigger while the subscriber's status can still be read. SQLite: row triggers.
The counts are filled from the existing rows here.

Revision ID: 0014
Revises: 0010
"""

# ruff: noqa: S608 (the SQL below is our own, built from constants: no input in it)

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SHARDS = 16
# A transaction-level advisory lock per shard, taken before any of the shard's count rows: the
# transactions of two connections that share a shard take its rows one after the other, never
# in crossed orders (no deadlock), whatever the order of their statements.
SHARD_LOCK = f"""
    PERFORM pg_advisory_xact_lock(140023, mod(pg_backend_pid(), {SHARDS}));"""

# --- PostgreSQL -------------------------------------------------------------------------------

PG_DELIVERY = """
CREATE FUNCTION delivery_count_kept() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- The update's row is the lock every writer of its counts takes first, in id order (as
    -- the settle's own UPDATE of it would): two workers settling chunks of one update never
    -- take its count rows in crossed orders, so never deadlock.
    IF TG_OP = 'INSERT' THEN
        PERFORM 1 FROM theme_update WHERE id IN (SELECT update_id FROM new_rows)
            ORDER BY id FOR NO KEY UPDATE;
        INSERT INTO delivery_count (update_id, status, n)
        SELECT update_id, status, count(*) FROM new_rows GROUP BY 1, 2 ORDER BY 1, 2
        ON CONFLICT (update_id, status) DO UPDATE SET n = delivery_count.n + EXCLUDED.n;
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM 1 FROM theme_update WHERE id IN (SELECT update_id FROM old_rows)
            ORDER BY id FOR NO KEY UPDATE;
        UPDATE delivery_count c SET n = c.n - d.k
        FROM (SELECT update_id, status, count(*) AS k FROM old_rows GROUP BY 1, 2) d
        WHERE c.update_id = d.update_id AND c.status = d.status;
    ELSE
        PERFORM 1 FROM theme_update WHERE id IN (
            SELECT n.update_id FROM new_rows n JOIN old_rows o USING (id)
            WHERE n.status IS DISTINCT FROM o.status OR n.update_id <> o.update_id
            UNION SELECT o.update_id FROM new_rows n JOIN old_rows o USING (id)
            WHERE n.status IS DISTINCT FROM o.status OR n.update_id <> o.update_id
        ) ORDER BY id FOR NO KEY UPDATE;
        INSERT INTO delivery_count (update_id, status, n)
        SELECT update_id, status, sum(k) FROM (
            SELECT n.update_id, n.status, 1 AS k FROM new_rows n JOIN old_rows o USING (id)
            WHERE n.status IS DISTINCT FROM o.status OR n.update_id <> o.update_id
            UNION ALL
            SELECT o.update_id, o.status, -1 FROM new_rows n JOIN old_rows o USING (id)
            WHERE n.status IS DISTINCT FROM o.status OR n.update_id <> o.update_id
        ) d GROUP BY 1, 2 HAVING sum(k) <> 0 ORDER BY 1, 2
        ON CONFLICT (update_id, status) DO UPDATE SET n = delivery_count.n + EXCLUDED.n;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER delivery_count_insert AFTER INSERT ON delivery
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION delivery_count_kept();
CREATE TRIGGER delivery_count_update AFTER UPDATE ON delivery
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION delivery_count_kept();
CREATE TRIGGER delivery_count_delete AFTER DELETE ON delivery
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION delivery_count_kept();
"""


def _add(deltas: str) -> str:
    """Adds the deltas of a SELECT (theme, status, k) to this connection's shard."""
    return f"""
        INSERT INTO subscriber_count (theme, status, shard, n)
        SELECT theme, status, mod(pg_backend_pid(), {SHARDS}), sum(k) FROM ({deltas}) d
        GROUP BY 1, 2 HAVING sum(k) <> 0 ORDER BY 1, 2
        ON CONFLICT (theme, status, shard) DO UPDATE SET n = subscriber_count.n + EXCLUDED.n;
"""


PG_SUBSCRIBER = (
    """
CREATE FUNCTION subscriber_count_kept() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN"""
    + SHARD_LOCK
    + """
    IF TG_OP = 'INSERT' THEN"""
    + _add("SELECT '' AS theme, status, 1 AS k FROM new_rows")
    + """
    ELSIF TG_OP = 'DELETE' THEN"""
    + _add("SELECT '' AS theme, status, -1 AS k FROM old_rows")
    + """
    ELSE"""
    + _add("""
            WITH changed AS (
                SELECT n.id, n.status AS new_status, o.status AS old_status
                FROM new_rows n JOIN old_rows o USING (id)
                WHERE n.status IS DISTINCT FROM o.status
            ),
            themes AS (
                SELECT '' AS theme, c.* FROM changed c
                UNION ALL
                SELECT t.theme, c.* FROM changed c JOIN subscriber_theme t ON t.subscriber_id = c.id
            )
            SELECT theme, new_status AS status, 1 AS k FROM themes
            UNION ALL
            SELECT theme, old_status, -1 FROM themes""")
    + """
    END IF;
    RETURN NULL;
END $$;
CREATE FUNCTION subscriber_theme_count_kept() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN"""
    + SHARD_LOCK
    + """
    IF TG_OP = 'INSERT' THEN"""
    + _add(
        "SELECT t.theme, s.status, 1 AS k FROM new_rows t JOIN subscriber s ON s.id = t.subscriber_id"
    )
    + """
    ELSIF TG_OP = 'DELETE' THEN"""
    + _add(
        "SELECT t.theme, s.status, -1 AS k FROM old_rows t JOIN subscriber s ON s.id = t.subscriber_id"
    )
    + """
    ELSE"""
    + _add("""
            SELECT t.theme, s.status, 1 AS k FROM new_rows t JOIN subscriber s ON s.id = t.subscriber_id
            UNION ALL
            SELECT t.theme, s.status, -1 FROM old_rows t JOIN subscriber s ON s.id = t.subscriber_id""")
    + """
    END IF;
    RETURN NULL;
END $$;
-- A subscriber's themes go first, counted out while the subscriber's status can be read.
CREATE FUNCTION subscriber_themes_first() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM subscriber_theme WHERE subscriber_id = OLD.id;
    RETURN OLD;
END $$;
CREATE TRIGGER subscriber_count_insert AFTER INSERT ON subscriber
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION subscriber_count_kept();
CREATE TRIGGER subscriber_count_update AFTER UPDATE ON subscriber
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscriber_count_kept();
CREATE TRIGGER subscriber_count_delete AFTER DELETE ON subscriber
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION subscriber_count_kept();
CREATE TRIGGER subscriber_themes_first BEFORE DELETE ON subscriber
    FOR EACH ROW EXECUTE FUNCTION subscriber_themes_first();
CREATE TRIGGER subscriber_theme_count_insert AFTER INSERT ON subscriber_theme
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscriber_theme_count_kept();
CREATE TRIGGER subscriber_theme_count_update AFTER UPDATE ON subscriber_theme
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscriber_theme_count_kept();
CREATE TRIGGER subscriber_theme_count_delete AFTER DELETE ON subscriber_theme
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscriber_theme_count_kept();
"""
)

PG_DROP = """
DROP TRIGGER IF EXISTS delivery_count_insert ON delivery;
DROP TRIGGER IF EXISTS delivery_count_update ON delivery;
DROP TRIGGER IF EXISTS delivery_count_delete ON delivery;
DROP TRIGGER IF EXISTS subscriber_count_insert ON subscriber;
DROP TRIGGER IF EXISTS subscriber_count_update ON subscriber;
DROP TRIGGER IF EXISTS subscriber_count_delete ON subscriber;
DROP TRIGGER IF EXISTS subscriber_themes_first ON subscriber;
DROP TRIGGER IF EXISTS subscriber_theme_count_insert ON subscriber_theme;
DROP TRIGGER IF EXISTS subscriber_theme_count_update ON subscriber_theme;
DROP TRIGGER IF EXISTS subscriber_theme_count_delete ON subscriber_theme;
DROP FUNCTION IF EXISTS delivery_count_kept();
DROP FUNCTION IF EXISTS subscriber_count_kept();
DROP FUNCTION IF EXISTS subscriber_theme_count_kept();
DROP FUNCTION IF EXISTS subscriber_themes_first();
"""

# --- SQLite: row triggers -----------------------------------------------------------------------


def _sqlite_add(table: str, keys: str, values: str, k: str, where: str = "") -> str:
    """An upsert adding k to the row of `keys` (values may name NEW/OLD or a SELECT's columns)."""
    source = f"SELECT {values}, {k} {where or 'WHERE true'}"
    return (
        f"INSERT INTO {table} ({keys}, n) {source} "
        f"ON CONFLICT ({keys}) DO UPDATE SET n = n + excluded.n;"
    )


def _d(values: str, k: str) -> str:
    return _sqlite_add("delivery_count", "update_id, status", values, k)


def _s(values: str, k: str, where: str = "") -> str:
    return _sqlite_add("subscriber_count", "theme, status, shard", values + ", 0", k, where)


SQLITE = [
    f"""CREATE TRIGGER delivery_count_insert AFTER INSERT ON delivery BEGIN
        {_d("NEW.update_id, NEW.status", "1")} END""",
    f"""CREATE TRIGGER delivery_count_update AFTER UPDATE OF status, update_id ON delivery
        WHEN OLD.status IS NOT NEW.status OR OLD.update_id IS NOT NEW.update_id BEGIN
        {_d("NEW.update_id, NEW.status", "1")} {_d("OLD.update_id, OLD.status", "-1")} END""",
    f"""CREATE TRIGGER delivery_count_delete AFTER DELETE ON delivery BEGIN
        {_d("OLD.update_id, OLD.status", "-1")} END""",
    f"""CREATE TRIGGER subscriber_count_insert AFTER INSERT ON subscriber BEGIN
        {_s("'', NEW.status", "1")} END""",
    f"""CREATE TRIGGER subscriber_count_update AFTER UPDATE OF status ON subscriber
        WHEN OLD.status IS NOT NEW.status BEGIN
        {_s("'', NEW.status", "1")} {_s("'', OLD.status", "-1")}
        {_s("theme, NEW.status", "1", "FROM subscriber_theme WHERE subscriber_id = NEW.id")}
        {_s("theme, OLD.status", "-1", "FROM subscriber_theme WHERE subscriber_id = OLD.id")}
        END""",
    """CREATE TRIGGER subscriber_themes_first BEFORE DELETE ON subscriber BEGIN
        DELETE FROM subscriber_theme WHERE subscriber_id = OLD.id; END""",
    f"""CREATE TRIGGER subscriber_count_delete AFTER DELETE ON subscriber BEGIN
        {_s("'', OLD.status", "-1")} END""",
    f"""CREATE TRIGGER subscriber_theme_count_insert AFTER INSERT ON subscriber_theme BEGIN
        {_s("NEW.theme, status", "1", "FROM subscriber WHERE id = NEW.subscriber_id")} END""",
    f"""CREATE TRIGGER subscriber_theme_count_update AFTER UPDATE ON subscriber_theme BEGIN
        {_s("NEW.theme, status", "1", "FROM subscriber WHERE id = NEW.subscriber_id")}
        {_s("OLD.theme, status", "-1", "FROM subscriber WHERE id = OLD.subscriber_id")} END""",
    f"""CREATE TRIGGER subscriber_theme_count_delete AFTER DELETE ON subscriber_theme BEGIN
        {_s("OLD.theme, status", "-1", "FROM subscriber WHERE id = OLD.subscriber_id")} END""",
]
SQLITE_TRIGGERS = [
    "delivery_count_insert",
    "delivery_count_update",
    "delivery_count_delete",
    "subscriber_count_insert",
    "subscriber_count_update",
    "subscriber_themes_first",
    "subscriber_count_delete",
    "subscriber_theme_count_insert",
    "subscriber_theme_count_update",
    "subscriber_theme_count_delete",
]

FILL = [
    "INSERT INTO delivery_count (update_id, status, n) "
    "SELECT update_id, status, count(*) FROM delivery GROUP BY update_id, status",
    "INSERT INTO subscriber_count (theme, status, shard, n) "
    "SELECT '', status, 0, count(*) FROM subscriber GROUP BY status",
    "INSERT INTO subscriber_count (theme, status, shard, n) "
    "SELECT t.theme, s.status, 0, count(*) FROM subscriber_theme t "
    "JOIN subscriber s ON s.id = t.subscriber_id GROUP BY t.theme, s.status",
]


def upgrade() -> None:
    op.create_table(
        "delivery_count",
        sa.Column("update_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["update_id"], ["theme_update.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("update_id", "status"),
    )
    op.create_table(
        "subscriber_count",
        sa.Column("theme", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("shard", sa.Integer(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("theme", "status", "shard"),
    )
    for statement in FILL:
        op.execute(statement)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(PG_DELIVERY)
        op.execute(PG_SUBSCRIBER)
    else:
        for statement in SQLITE:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(PG_DROP)
    else:
        for name in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.drop_table("subscriber_count")
    op.drop_table("delivery_count")

"""kept counts: how many subscribers an update on some themes would reach

The compose, drafts, send, weekly-summary and progress pages, and the start of a send, counted
who an update reaches with a join (active subscribers who chose at least one of its themes,
split by frequency: those on immediate get it, sending/recipients.py; those on weekly get it in
the summary): seconds at a million subscribers. The database keeps it:

- theme_bit(theme, bit): each theme's bit, filled here (a new theme's migration adds its row).
- reach_count(bits, frequency, shard, n): active subscribers on that frequency whose chosen
  themes are exactly the set `bits` (0: none), summed over shards. An update on themes T
  reaches the sum of n over the sets that meet T's mask; 31 possible sets a frequency, so a
  page reads a few rows.

What moves a subscriber, whichever code does it:

- a subscriber row inserted or deleted, its status changing in or out of active, or its
  frequency changing while active: -1 at its old (set, frequency), +1 at its new one;
- their subscriber_theme rows inserted, deleted or updated while they are active: from the set
  before the statement (the set after it, less what it inserted, plus what it deleted) to the
  set after it, at their frequency;
- a subscriber deleted: 0014's BEFORE DELETE row trigger deletes their themes first (moving
  them to the empty set while their status can be read), then the delete takes them out of 0.

PostgreSQL: statement-level AFTER triggers with transition tables, adding to the connection's
shard (backend pid modulo 16) under the shard's advisory lock that subscriber_count (0014)
takes in the same statements. A set is not a sum of its themes, so two transactions changing
one subscriber's themes at once must not both read the set from before either: the theme
trigger first locks the subscribers whose themes it changed (their rows, FOR NO KEY UPDATE, in
id order, before the shard lock), then reads their status and themes in a fresh snapshot (READ
COMMITTED: a statement after the lock sees what the holder committed). A status or frequency
change holds the row's lock already (its UPDATE took it). No new lock order among the app's
paths: those that change themes hold the subscriber's row already (desk, sign-up, confirmation,
import, and since records.lock the preferences link and erasure too, which had locked it only
after the theme rows). The triggers are named to fire before 0014's on the same table, so the
row locks come before the shard lock. SQLite (one writer): row triggers. The counts are
filled from the existing rows with one grouped query.

Revision ID: 0018
Revises: 0019
"""

# ruff: noqa: S608 (the SQL below is our own, built from constants: no input in it)

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The themes of this revision and their bits (mailing/themes.py's list; a test checks they are
# all here). Frozen: a new theme gets its row from its own migration.
BITS = {
    "healthy-children": 0,
    "healthy-minds": 1,
    "healthy-places": 2,
    "healthy-communities": 3,
    "healthy-living": 4,
}
SHARDS = 16  # as 0014's subscriber_count, whose advisory lock key this shares
SHARD_LOCK = f"PERFORM pg_advisory_xact_lock(140023, mod(pg_backend_pid(), {SHARDS}));"


def _counted(row: str) -> str:
    """Whether subscriber row `row` (an alias, NEW or OLD) is counted (at its frequency)."""
    return f"({row}.status = 'active')"


def _bits_of(subscriber_id: str) -> str:
    """The set of themes the subscriber has now, as bits (a theme with no bit counts for none)."""
    return f"""(SELECT coalesce(sum(1 << b.bit), 0) FROM subscriber_theme t
        JOIN theme_bit b ON b.theme = t.theme WHERE t.subscriber_id = {subscriber_id})"""


# --- PostgreSQL -------------------------------------------------------------------------------


def _add(deltas: str) -> str:
    """Adds the (bits, frequency, k) deltas of a SELECT to this connection's shard, in key
    order."""
    return f"""
        INSERT INTO reach_count (bits, frequency, shard, n)
        SELECT bits, frequency, mod(pg_backend_pid(), {SHARDS}), sum(k) FROM ({deltas}) d
        GROUP BY 1, 2 HAVING sum(k) <> 0 ORDER BY 1, 2
        ON CONFLICT (bits, frequency, shard) DO UPDATE SET n = reach_count.n + EXCLUDED.n;"""


def _subscriber_rows(rows: str, sign: int) -> str:
    """Inserted (+1) or deleted (-1) subscriber rows that count, at their set of themes."""
    deltas = (
        f"SELECT {_bits_of('r.id')} AS bits, r.frequency AS frequency, {sign} AS k "
        f"FROM {rows} r WHERE {_counted('r')}"
    )
    return f"""
        IF EXISTS (SELECT 1 FROM {rows} r WHERE {_counted("r")}) THEN
            {SHARD_LOCK}{_add(deltas)}
        END IF;"""


# Subscriber rows an UPDATE moved: in or out of the active ones, or from one frequency to the
# other while active (out of the old place, into the new).
_MOVED = f"""FROM new_rows n JOIN old_rows o USING (id)
            WHERE ({_counted("n")}, n.frequency) IS DISTINCT FROM ({_counted("o")}, o.frequency)"""
_IN_OR_OUT = f"""SELECT {_bits_of("n.id")} AS bits, n.frequency AS frequency, 1 AS k {_MOVED}
            AND {_counted("n")}
            UNION ALL
            SELECT {_bits_of("n.id")}, o.frequency, -1 {_MOVED} AND {_counted("o")}"""

PG_SUBSCRIBER = f"""
CREATE FUNCTION reach_count_subscriber() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN{_subscriber_rows("new_rows", 1)}
    ELSIF TG_OP = 'DELETE' THEN{_subscriber_rows("old_rows", -1)}
    ELSIF EXISTS (SELECT 1 {_MOVED}) THEN
        {SHARD_LOCK}{_add(_IN_OR_OUT)}
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER reach_count_subscriber_insert AFTER INSERT ON subscriber
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION reach_count_subscriber();
CREATE TRIGGER reach_count_subscriber_update AFTER UPDATE ON subscriber
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION reach_count_subscriber();
CREATE TRIGGER reach_count_subscriber_delete AFTER DELETE ON subscriber
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION reach_count_subscriber();
"""


def _bit_rows(rows: str, added: bool) -> str:
    """(id, added, removed) bits of the theme rows of a transition table."""
    bit = "1 << b.bit"
    parts = f"{bit}, 0" if added else f"0, {bit}"
    return f"""SELECT r.subscriber_id, {parts} FROM {rows} r
                    JOIN theme_bit b ON b.theme = r.theme"""


def _counted_frequency(subscriber_id: str) -> str:
    """The subscriber's frequency if they count now (else NULL): one look-up by primary key."""
    return (
        f"(SELECT s.frequency FROM subscriber s WHERE s.id = {subscriber_id} AND {_counted('s')})"
    )


def _themes_moved(tables: tuple[str, ...], bit_rows: str) -> str:
    """Lock the subscribers whose theme rows are in `tables` (new_rows, old_rows) in id order,
    then move those who count from their set before the statement (the set now, less the bits
    `bit_rows` added, plus those it removed) to their set now, at their frequency.

    Every subscriber is read by its key, a look-up per changed subscriber, and the changed rows
    are grouped, never joined to the subscriber table: the plan stays linear in the rows the
    statement changed whatever the planner guesses. (Joined, on a table with no statistics yet
    or a status it thought rare, the planner made it a nested loop over both: 3 s for a bulk
    insert of 8,000 theme rows, quadratic.)"""
    ids = " UNION ".join(f"SELECT subscriber_id AS id FROM {t}" for t in tables)
    deltas = f"""
            WITH moved AS (
                SELECT g.id, g.frequency, g.added, g.removed, {_bits_of("g.id")} AS now FROM (
                    SELECT x.id, sum(x.a) AS added, sum(x.r) AS removed,
                        {_counted_frequency("x.id")} AS frequency
                    FROM ({bit_rows}) x (id, a, r) GROUP BY x.id OFFSET 0
                ) g WHERE g.frequency IS NOT NULL
            )
            SELECT now AS bits, frequency, 1 AS k FROM moved
            UNION ALL
            SELECT (now & ~added) | removed, frequency, -1 FROM moved"""
    return f"""
        PERFORM (SELECT 1 FROM subscriber s WHERE s.id = c.id FOR NO KEY UPDATE)
            FROM ({ids} ORDER BY 1) c;
        IF EXISTS (SELECT 1 FROM ({ids}) c WHERE {_counted_frequency("c.id")} IS NOT NULL) THEN
            {SHARD_LOCK}{_add(deltas)}
        END IF;"""


_INSERTED = _themes_moved(("new_rows",), _bit_rows("new_rows", True))
_DELETED = _themes_moved(("old_rows",), _bit_rows("old_rows", False))
_UPDATED = _themes_moved(
    ("new_rows", "old_rows"),
    _bit_rows("new_rows", True) + "\n                    UNION ALL " + _bit_rows("old_rows", False),
)

PG_THEME = f"""
CREATE FUNCTION reach_count_theme() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN{_INSERTED}
    ELSIF TG_OP = 'DELETE' THEN{_DELETED}
    ELSE{_UPDATED}
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER reach_count_theme_insert AFTER INSERT ON subscriber_theme
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION reach_count_theme();
CREATE TRIGGER reach_count_theme_update AFTER UPDATE ON subscriber_theme
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION reach_count_theme();
CREATE TRIGGER reach_count_theme_delete AFTER DELETE ON subscriber_theme
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION reach_count_theme();
"""

PG_TRIGGERS = {
    "reach_count_subscriber_insert": "subscriber",
    "reach_count_subscriber_update": "subscriber",
    "reach_count_subscriber_delete": "subscriber",
    "reach_count_theme_insert": "subscriber_theme",
    "reach_count_theme_update": "subscriber_theme",
    "reach_count_theme_delete": "subscriber_theme",
}
PG_FUNCTIONS = ("reach_count_subscriber", "reach_count_theme")

# --- SQLite: row triggers -----------------------------------------------------------------------


def _sqlite_add(bits: str, frequency: str, k: str, source: str) -> str:
    """Adds k at (`bits`, `frequency`) for each row of `source` (a FROM ... WHERE ...)."""
    return (
        f"INSERT INTO reach_count (bits, frequency, shard, n) "
        f"SELECT {bits}, {frequency}, 0, {k} {source} "
        "ON CONFLICT (bits, frequency, shard) DO UPDATE SET n = n + excluded.n;"
    )


def _bit(theme: str) -> str:
    return f"coalesce((SELECT 1 << bit FROM theme_bit WHERE theme = {theme}), 0)"


def _move(subscriber_id: str, before: str, when: str = "true") -> str:
    """Moves the subscriber, if they count (and `when`), from the set `before` (an expression
    of `now`, the set they have now) to the set they have now."""
    source = (
        f"FROM (SELECT {_bits_of(subscriber_id)} AS now, s.frequency AS freq FROM subscriber s "
        f"WHERE s.id = {subscriber_id} AND {_counted('s')} AND {when}) x WHERE true"
    )
    return _sqlite_add("now", "freq", "1", source) + " " + _sqlite_add(before, "freq", "-1", source)


def _known(row: str) -> str:
    return f"EXISTS (SELECT 1 FROM theme_bit WHERE theme = {row}.theme)"


_SAME = "OLD.subscriber_id = NEW.subscriber_id"
_NEW_SIDE = f"(now & ~{_bit('NEW.theme')}) | CASE WHEN {_SAME} THEN {_bit('OLD.theme')} ELSE 0 END"

SQLITE = {
    "reach_count_subscriber_insert": f"""AFTER INSERT ON subscriber
        WHEN {_counted("NEW")} BEGIN
        {_sqlite_add(_bits_of("NEW.id"), "NEW.frequency", "1", "WHERE true")} END""",
    "reach_count_subscriber_update": f"""AFTER UPDATE OF status, frequency ON subscriber
        WHEN {_counted("NEW")} IS NOT {_counted("OLD")} OR NEW.frequency IS NOT OLD.frequency
        BEGIN
        {_sqlite_add(_bits_of("NEW.id"), "OLD.frequency", "-1", f"WHERE {_counted('OLD')}")}
        {_sqlite_add(_bits_of("NEW.id"), "NEW.frequency", "1", f"WHERE {_counted('NEW')}")} END""",
    "reach_count_subscriber_delete": f"""AFTER DELETE ON subscriber
        WHEN {_counted("OLD")} BEGIN
        {_sqlite_add(_bits_of("OLD.id"), "OLD.frequency", "-1", "WHERE true")} END""",
    "reach_count_theme_insert": f"""AFTER INSERT ON subscriber_theme WHEN {_known("NEW")} BEGIN
        {_move("NEW.subscriber_id", f"now & ~{_bit('NEW.theme')}")} END""",
    "reach_count_theme_delete": f"""AFTER DELETE ON subscriber_theme WHEN {_known("OLD")} BEGIN
        {_move("OLD.subscriber_id", f"now | {_bit('OLD.theme')}")} END""",
    # No entry point updates a theme row; followed all the same, each side on its subscriber.
    "reach_count_theme_update": f"""AFTER UPDATE ON subscriber_theme BEGIN
        {_move("NEW.subscriber_id", _NEW_SIDE)}
        {_move("OLD.subscriber_id", f"now | {_bit('OLD.theme')}", f"NOT {_SAME}")} END""",
}

FILL = f"""
INSERT INTO reach_count (bits, frequency, shard, n)
SELECT bits, frequency, 0, count(*) FROM (
    SELECT s.id, s.frequency, coalesce(sum(1 << b.bit), 0) AS bits FROM subscriber s
    LEFT JOIN subscriber_theme t ON t.subscriber_id = s.id
    LEFT JOIN theme_bit b ON b.theme = t.theme
    WHERE {_counted("s")} GROUP BY s.id, s.frequency
) x GROUP BY bits, frequency"""


def upgrade() -> None:
    op.create_table(
        "theme_bit",
        sa.Column("theme", sa.String(length=40), nullable=False),
        sa.Column("bit", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("theme"),
    )
    op.create_table(
        "reach_count",
        sa.Column("bits", sa.Integer(), nullable=False),
        sa.Column("frequency", sa.String(length=16), nullable=False),
        sa.Column("shard", sa.Integer(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("bits", "frequency", "shard"),
    )
    theme_bit = sa.table("theme_bit", sa.column("theme"), sa.column("bit"))
    op.bulk_insert(theme_bit, [{"theme": t, "bit": b} for t, b in BITS.items()])
    # Triggers first, then the fill: on PostgreSQL creating them locks out writers of both
    # tables until this transaction commits, so no change falls between the fill and them.
    if op.get_bind().dialect.name == "postgresql":
        op.execute(PG_SUBSCRIBER)
        op.execute(PG_THEME)
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
    op.drop_table("reach_count")
    op.drop_table("theme_bit")

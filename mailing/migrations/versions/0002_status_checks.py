"""the database refuses a status it does not know: CHECK constraints on every status column

Statuses were plain VARCHARs, so a misspelt status in raw SQL would have been stored and then
never matched again. Each constraint lists exactly the values of its enum in mailing/states.py,
including the ones that scheduling, pausing, cancelling and bounces use. On SQLite a constraint
can only be added by rebuilding the table (Alembic's batch mode), with foreign keys switched
off by env.py so that dropping the old table does not cascade to its children, and the
AUTOINCREMENT counter of `subscriber` carried over so an erased subscriber's id is never reused.

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here (a migration must not change when the code does later).
CHECKS: dict[str, tuple[str, ...]] = {
    "subscriber": ("pending", "active", "unsubscribed", "bounced"),
    "theme_update": ("draft", "scheduled", "sending", "paused", "sent", "cancelled"),
    "delivery": ("pending", "sent", "failed", "cancelled", "bounced", "complained"),
}


def _name(table: str) -> str:
    return f"ck_{table}_status"


def _condition(values: tuple[str, ...]) -> str:
    return "status IN (" + ", ".join(f"'{v}'" for v in values) + ")"


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        for table, values in CHECKS.items():
            op.create_check_constraint(_name(table), table, _condition(values))
        return
    seq = bind.execute(
        sa.text("SELECT seq FROM sqlite_sequence WHERE name = 'subscriber'")
    ).scalar()
    for table, values in CHECKS.items():
        kwargs = {"sqlite_autoincrement": True} if table == "subscriber" else {}
        with op.batch_alter_table(table, recreate="always", table_kwargs=kwargs) as batch:
            batch.create_check_constraint(_name(table), _condition(values))
    if seq is not None:
        bind.execute(
            sa.text("UPDATE sqlite_sequence SET seq = MAX(seq, :s) WHERE name = 'subscriber'"),
            {"s": seq},
        )
        bind.execute(
            sa.text(
                "INSERT INTO sqlite_sequence (name, seq) SELECT 'subscriber', :s "
                "WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'subscriber')"
            ),
            {"s": seq},
        )


def downgrade() -> None:
    bind = op.get_bind()
    for table in CHECKS:
        if bind.dialect.name != "sqlite":
            op.drop_constraint(_name(table), table, type_="check")
        else:
            kwargs = {"sqlite_autoincrement": True} if table == "subscriber" else {}
            with op.batch_alter_table(table, recreate="always", table_kwargs=kwargs) as batch:
                batch.drop_constraint(_name(table), type_="check")

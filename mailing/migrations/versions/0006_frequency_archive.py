"""how often residents hear from us, the weekly summary ledger, and the public archive flag

- `subscriber.frequency` ("immediate" or "weekly", default immediate): weekly subscribers get a
  Saturday summary instead of each update. A CHECK constraint refuses any other value; it is
  written inside ADD COLUMN, which PostgreSQL and SQLite both accept, so SQLite needs no table
  rebuild (and `subscriber`'s AUTOINCREMENT counter is untouched).
- `consent_event.frequency`: the consent ledger records the frequency agreed to (NULL on older
  events). The ledger's append-only trigger forbids UPDATE, not ADD COLUMN.
- `theme_update.published` (default true): whether a sent update appears in the public archive
  and feed.
- `weekly_digest`: one row per subscriber and week, unique on the pair, so a summary is sent at
  most once however often beat plans the week; its status has a CHECK like migration 0002's.
- `digest_week`: the weeks already planned (figures only, no personal data).

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here (a migration must not change when the code does later).
FREQUENCIES = ("immediate", "weekly")
DIGEST_STATUSES = ("pending", "sent", "failed", "cancelled")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN (" + ", ".join(f"'{v}'" for v in values) + ")"


def _enum(name: str, values: tuple[str, ...]) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, length=16)


def upgrade() -> None:
    op.execute(
        "ALTER TABLE subscriber ADD COLUMN frequency VARCHAR(16) DEFAULT 'immediate' NOT NULL "
        f"CONSTRAINT ck_subscriber_frequency CHECK ({_in('frequency', FREQUENCIES)})"
    )
    op.add_column(
        "consent_event", sa.Column("frequency", _enum("frequency", FREQUENCIES), nullable=True)
    )
    op.add_column(
        "theme_update",
        sa.Column("published", sa.Boolean(), server_default=sa.true(), nullable=False),
    )
    op.create_table(
        "weekly_digest",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=False),
        sa.Column("week", sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
        sa.Column("update_ids", sa.Text(), nullable=False),
        sa.Column("status", _enum("digeststatus", DIGEST_STATUSES), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("enqueued_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("sent_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("error", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.ForeignKeyConstraint(["subscriber_id"], ["subscriber.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("subscriber_id", "week", name="uq_weekly_digest_subscriber_week"),
        sa.CheckConstraint(_in("status", DIGEST_STATUSES), name="ck_weekly_digest_status"),
    )
    op.create_index(
        "ix_weekly_digest_subscriber_id", "weekly_digest", ["subscriber_id"], unique=False
    )
    op.create_index("ix_weekly_digest_status_id", "weekly_digest", ["status", "id"], unique=False)
    op.create_table(
        "digest_week",
        sa.Column("week", sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
        sa.Column("planned_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("digests", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("week"),
    )


def downgrade() -> None:
    op.drop_table("digest_week")
    op.drop_index("ix_weekly_digest_status_id", table_name="weekly_digest")
    op.drop_index("ix_weekly_digest_subscriber_id", table_name="weekly_digest")
    op.drop_table("weekly_digest")
    # Plain DROP COLUMN (SQLite 3.35+): a batch rebuild of consent_event would lose its trigger.
    op.execute("ALTER TABLE theme_update DROP COLUMN published")
    op.execute("ALTER TABLE consent_event DROP COLUMN frequency")
    if op.get_bind().dialect.name == "sqlite":
        # SQLite (3.35+) drops a column only when no constraint names it: rebuild the table.
        with op.batch_alter_table(
            "subscriber", recreate="always", table_kwargs={"sqlite_autoincrement": True}
        ) as batch:
            batch.drop_constraint("ck_subscriber_frequency", type_="check")
            batch.drop_column("frequency")
    else:
        op.drop_column("subscriber", "frequency")

"""send control and recovery: scheduling, heartbeats, retry times, the notice outbox

- theme_update.send_at: when a scheduled update is due (UTC).
- theme_update.heartbeat_at / redriven_at: workers stamp the update at every settled chunk; the
  reconciler re-drives a send only when every send has gone quiet, so a killed worker is
  replaced within seconds and a long queue is never mistaken for lost work.
- theme_update.error: why the service itself stopped a send (an email it could not build).
- delivery.retry_at: a deferred delivery is not claimed again before it.
- ix_delivery_pending: a partial index on an update's pending rows in id order, which is exactly
  what each claim reads; the claim no longer depends on fresh planner statistics.
- notice: the outbox of one-off emails (confirmations, erase and export links, welcomes), each
  written in the transaction of the request that causes it, deleted once sent, re-driven by
  the reconciler if its task was lost. It names a subscriber id and a kind, never an address.

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PENDING = "status = 'pending'"
NOTICE_KINDS = ("confirm", "already_subscribed", "erase_link", "export_link", "welcome")


def upgrade() -> None:
    with op.batch_alter_table("theme_update") as batch:
        batch.add_column(sa.Column("send_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
        batch.add_column(
            sa.Column("heartbeat_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True)
        )
        batch.add_column(
            sa.Column("redriven_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True)
        )
        batch.add_column(
            sa.Column("error", sqlmodel.sql.sqltypes.AutoString(length=300), nullable=True)
        )
    with op.batch_alter_table("delivery") as batch:
        batch.add_column(sa.Column("retry_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
    op.create_index(
        "ix_delivery_pending",
        "delivery",
        ["update_id", "id"],
        postgresql_where=sa.text(PENDING),
        sqlite_where=sa.text(PENDING),
    )
    op.create_table(
        "notice",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(*NOTICE_KINDS, name="noticekind", native_enum=False, length=20),
            nullable=False,
        ),
        sa.Column("themes", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column(
            "frequency",
            sa.Enum("immediate", "weekly", name="frequency", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("enqueued_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["subscriber_id"], ["subscriber.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.CheckConstraint(
            "kind IN (" + ", ".join(f"'{k}'" for k in NOTICE_KINDS) + ")", name="ck_notice_kind"
        ),
    )
    op.create_index("ix_notice_subscriber_id", "notice", ["subscriber_id"])


def downgrade() -> None:
    op.drop_index("ix_notice_subscriber_id", table_name="notice")
    op.drop_table("notice")
    op.drop_index("ix_delivery_pending", table_name="delivery")
    with op.batch_alter_table("delivery") as batch:
        batch.drop_column("retry_at")
    with op.batch_alter_table("theme_update") as batch:
        for column in ("error", "redriven_at", "heartbeat_at", "send_at"):
            batch.drop_column(column)

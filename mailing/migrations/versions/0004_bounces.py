"""soft bounces: a counted, temporary delivery failure per subscriber and update (issue 13)

Three soft bounces (4.x.x) on three different updates within 30 days count as a hard bounce, so
each is remembered: which subscriber, which update, the DSN status code and when. Nothing from
the bounce message itself is kept. Rows go with the subscriber (erasure) or the update.
Hard bounces and complaints need no table: they are statuses of `delivery` and `subscriber`,
which migration 0002's CHECK constraints already allow.

Revision ID: 0004
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0004"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "soft_bounce",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=False),
        sa.Column("update_id", sa.Integer(), nullable=False),
        sa.Column("status_code", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("occurred_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["subscriber_id"], ["subscriber.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["update_id"], ["theme_update.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("subscriber_id", "update_id", name="uq_soft_bounce_subscriber_update"),
    )
    with op.batch_alter_table("soft_bounce", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_soft_bounce_subscriber_id"), ["subscriber_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("soft_bounce", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_soft_bounce_subscriber_id"))
    op.drop_table("soft_bounce")

"""reliability: beat leases, and why each subscriber was suppressed

- beat_lease: one row per housekeeping job, holding the last period a beat claimed it for.
  Any number of `mailing beat` processes may run; the one whose conditional upsert moves the
  period on publishes the job, the others skip it (workers/beat_lease.py).
- subscriber.suppression_cause / suppression_update_id: what stopped mail to a subscriber (a
  bounce, a complaint, a relay's 5xx, an unsubscribe) and the update whose copy caused it, so
  an admin can find and reinstate those one storm suppressed (mailing/deliverability/
  suppressions.py). No address, no message text.
- delivery.failed_at: when the relay refused a copy (5xx), so an admin can re-send an update to
  the copies refused in a time window.

Revision ID: 0013
Revises: 0015
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0013"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "beat_lease",
        sa.Column("job", sqlmodel.sql.sqltypes.AutoString(length=60), nullable=False),
        sa.Column("period", sa.BigInteger(), nullable=False),
        sa.Column("holder", sqlmodel.sql.sqltypes.AutoString(length=120), nullable=False),
        sa.Column("claimed_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("job"),
    )
    with op.batch_alter_table("subscriber") as batch:
        batch.add_column(
            sa.Column(
                "suppression_cause", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True
            )
        )
        batch.add_column(sa.Column("suppression_update_id", sa.Integer(), nullable=True))
        batch.create_index("ix_subscriber_unsubscribed_at", ["unsubscribed_at"])
    with op.batch_alter_table("delivery") as batch:
        batch.add_column(sa.Column("failed_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("delivery") as batch:
        batch.drop_column("failed_at")
    with op.batch_alter_table("subscriber") as batch:
        batch.drop_index("ix_subscriber_unsubscribed_at")
        batch.drop_column("suppression_update_id")
        batch.drop_column("suppression_cause")
    op.drop_table("beat_lease")

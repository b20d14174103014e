"""weekly summaries retried with backoff: weekly_digest.retry_at

- weekly_digest.retry_at: a summary the relay deferred (4xx) is not claimed again before it,
  as delivery.retry_at does for update deliveries.

Revision ID: 0010
Revises: 0012
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0010"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("weekly_digest") as batch:
        batch.add_column(sa.Column("retry_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("weekly_digest") as batch:
        batch.drop_column("retry_at")

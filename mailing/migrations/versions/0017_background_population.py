"""background population: a send's delivery rows are written by the workers, a page at a time

- theme_update.populate_after: while a send's delivery rows are still being written, the last
  subscriber id written (the keyset cursor); NULL once every row is written (and for every update
  sent before this revision, whose rows were all written in the request).
- theme_update.populate_lease_at: when a worker last took or renewed the writing of the next
  pages; another worker takes over once it is older than the lease.

Revision ID: 0017
Revises: 0016
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("theme_update", sa.Column("populate_after", sa.BigInteger(), nullable=True))
    op.add_column(
        "theme_update",
        sa.Column("populate_lease_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    )


def downgrade() -> None:
    with op.batch_alter_table("theme_update") as batch:
        batch.drop_column("populate_lease_at")
        batch.drop_column("populate_after")

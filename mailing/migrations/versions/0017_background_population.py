"""background population: a send's delivery rows are written by the workers, a page at a time

- update_population: one row per send whose delivery rows are still being written: the last
  subscriber id written (the keyset cursor) and when the worker writing them last renewed its
  lease. No row: every delivery row is written (so for every update sent before this revision,
  whose rows were all written in the request). Apart from theme_update, whose row every settled
  chunk locks, so a page and a chunk never wait for each other's locks in opposite orders.

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
    op.create_table(
        "update_population",
        sa.Column("update_id", sa.Integer(), nullable=False),
        sa.Column("after", sa.BigInteger(), nullable=False),
        sa.Column("lease_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["update_id"], ["theme_update.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("update_id"),
    )


def downgrade() -> None:
    op.drop_table("update_population")

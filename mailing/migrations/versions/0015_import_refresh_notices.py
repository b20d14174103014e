"""notice kinds for bringing a list in and refreshing consent: `repermission` (an imported
address without evidence of consent is asked once) and `consent_refresh` (consent older than
MAILING_CONSENT_REFRESH_YEARS is asked to be renewed). The ledger's new event kinds (imported,
refresh-asked, renewed, lapsed) need no change: consent_event.kind has no CHECK constraint.

On SQLite a CHECK constraint changes only by rebuilding the table; the notice outbox is
rebuilt from the definition below (the same columns as 0007), its rows copied.

Revision ID: 0015
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0015"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here (a migration must not change when the code does later).
OLD_KINDS = ("confirm", "already_subscribed", "erase_link", "export_link", "welcome")
NEW_KINDS = (*OLD_KINDS, "repermission", "consent_refresh")
NAME = "ck_notice_kind"


def _condition(kinds: tuple[str, ...]) -> str:
    return "kind IN (" + ", ".join(f"'{k}'" for k in kinds) + ")"


def _notice(kinds: tuple[str, ...]) -> sa.Table:
    return sa.Table(
        "notice",
        sa.MetaData(),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("themes", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("frequency", sa.String(length=16), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("enqueued_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["subscriber_id"], ["subscriber.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.CheckConstraint(_condition(kinds), name=NAME),
        sa.Index("ix_notice_subscriber_id", "subscriber_id"),
    )


def _change(old: tuple[str, ...], new: tuple[str, ...]) -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint(NAME, "notice", type_="check")
        op.create_check_constraint(NAME, "notice", _condition(new))
        return
    with op.batch_alter_table("notice", recreate="always", copy_from=_notice(old)) as batch:
        batch.drop_constraint(NAME, type_="check")
        batch.create_check_constraint(NAME, _condition(new))


def upgrade() -> None:
    _change(OLD_KINDS, NEW_KINDS)


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM notice WHERE kind IN ('repermission', 'consent_refresh')"))
    _change(NEW_KINDS, OLD_KINDS)

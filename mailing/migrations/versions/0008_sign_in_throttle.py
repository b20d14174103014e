"""the staff sign-in throttle: the second-factor lockout per account, admins told of failures

- staff.factor_failures / factor_locked_until / factor_lockouts: wrong second-factor codes count
  per account until a second factor succeeds (a right password no longer resets them); five
  lock the step for 15 minutes, doubling with each lockout in a row.
- notice.staff_id / about_staff_id, subscriber_id nullable, kind `sign_in_failures`: the outbox
  also carries the email telling each admin that an account sees repeated failed sign-ins. It
  names staff ids, never an address.

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_KINDS = ("confirm", "already_subscribed", "erase_link", "export_link", "welcome")
NEW_KINDS = (*OLD_KINDS, "sign_in_failures")


def _kinds(kinds: Sequence[str]) -> str:
    return "kind IN (" + ", ".join(f"'{k}'" for k in kinds) + ")"


def upgrade() -> None:
    with op.batch_alter_table("staff") as batch:
        batch.add_column(
            sa.Column("factor_failures", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(
            sa.Column("factor_locked_until", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True)
        )
        batch.add_column(
            sa.Column("factor_lockouts", sa.Integer(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("staff") as batch:
        batch.alter_column("factor_failures", server_default=None)
        batch.alter_column("factor_lockouts", server_default=None)
    with op.batch_alter_table("notice") as batch:
        batch.drop_constraint("ck_notice_kind", type_="check")
        batch.alter_column("subscriber_id", existing_type=sa.Integer(), nullable=True)
        batch.add_column(sa.Column("staff_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("about_staff_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            "fk_notice_staff_id", "staff", ["staff_id"], ["id"], ondelete="CASCADE"
        )
        batch.create_foreign_key(
            "fk_notice_about_staff_id", "staff", ["about_staff_id"], ["id"], ondelete="CASCADE"
        )
        batch.create_check_constraint("ck_notice_kind", _kinds(NEW_KINDS))


def downgrade() -> None:
    op.execute("DELETE FROM notice WHERE subscriber_id IS NULL")
    with op.batch_alter_table("notice") as batch:
        batch.drop_constraint("ck_notice_kind", type_="check")
        batch.drop_constraint("fk_notice_about_staff_id", type_="foreignkey")
        batch.drop_constraint("fk_notice_staff_id", type_="foreignkey")
        batch.drop_column("about_staff_id")
        batch.drop_column("staff_id")
        batch.alter_column("subscriber_id", existing_type=sa.Integer(), nullable=False)
        batch.create_check_constraint("ck_notice_kind", _kinds(OLD_KINDS))
    with op.batch_alter_table("staff") as batch:
        for column in ("factor_lockouts", "factor_locked_until", "factor_failures"):
            batch.drop_column(column)

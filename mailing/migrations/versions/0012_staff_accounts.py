"""staff accounts the organisation's way: invitations, one-time enrolment links, token scopes

- staff_invitation: a one-time link (signed, naming its row) to choose a password and enrol a
  second factor in one sitting; valid 72 hours, used once; it records the half-open session it
  opened, the only one in which that person may enrol a first factor.
- notice.staff_id: the notice outbox also carries staff emails (the invitation link); such a row
  names a staff member instead of a subscriber, so notice.subscriber_id may be empty.
- notice kind 'staff_invite' joins the CHECK constraint.
- staff.token_scope: what the API token may do (read, draft, send), capped by the role.
- notice.update_id and kinds 'review_request', 'update_sent': a sender asked to review an
  update; its author told it has gone.

Revision ID: 0012
Revises: 0013
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0012"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_KINDS = (
    "confirm",
    "already_subscribed",
    "erase_link",
    "export_link",
    "welcome",
    "sign_in_failures",
    "repermission",
    "consent_refresh",
)
NEW_KINDS = (*OLD_KINDS, "staff_invite", "review_request", "update_sent", "send_paused")


def _kinds(kinds: Sequence[str]) -> str:
    return "kind IN (" + ", ".join(f"'{k}'" for k in kinds) + ")"


def upgrade() -> None:
    op.create_table(
        "staff_invitation",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("staff_id", sa.Integer(), nullable=False),
        sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("expires_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("used_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("session_key", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.ForeignKeyConstraint(["staff_id"], ["staff.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["created_by"], ["staff.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_staff_invitation_staff_id", "staff_invitation", ["staff_id"])
    with op.batch_alter_table("notice") as batch:
        # subscriber_id nullable and staff_id came with 0008 (staff notices).
        batch.add_column(sa.Column("update_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            "fk_notice_update_id_theme_update",
            "theme_update",
            ["update_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch.drop_constraint("ck_notice_kind", type_="check")
        batch.create_check_constraint("ck_notice_kind", _kinds(NEW_KINDS))
    with op.batch_alter_table("staff") as batch:
        batch.add_column(
            sa.Column(
                "token_scope",
                sqlmodel.sql.sqltypes.AutoString(length=8),
                nullable=False,
                server_default="send",
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("staff") as batch:
        batch.drop_column("token_scope")
    op.execute("DELETE FROM notice WHERE kind IN ('staff_invite', 'review_request', 'update_sent')")
    with op.batch_alter_table("notice") as batch:
        batch.drop_constraint("ck_notice_kind", type_="check")
        batch.create_check_constraint("ck_notice_kind", _kinds(OLD_KINDS))
        batch.drop_constraint("fk_notice_update_id_theme_update", type_="foreignkey")
        batch.drop_column("update_id")
    op.drop_index("ix_staff_invitation_staff_id", table_name="staff_invitation")
    op.drop_table("staff_invitation")

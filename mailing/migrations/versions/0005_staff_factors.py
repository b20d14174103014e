"""staff second factors, recovery codes, expiring API tokens, session idle time, audit client IP

Console sign-in now needs a second factor: `staff_factor` holds each TOTP secret (encrypted with the
secret keys, with the last step used, so a code is never accepted twice) or passkey (credential id, public key, signature
counter); `staff_recovery_code` holds keyed hashes of single-use codes. `staff` gains its API
token's issue, last-use and revocation times (tokens expire MAILING_API_TOKEN_DAYS after issue;
existing tokens count from the member's creation). `staff_session` gains the last request time
(idle timeout), when a second factor was last given (NULL: password only) and a pending
WebAuthn challenge. `audit_log` gains the client IP. Adding nullable columns needs no table
rebuild on SQLite.

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _when(name: str) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True)


def upgrade() -> None:
    op.create_table(
        "staff_factor",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("staff_id", sa.Integer(), nullable=False),
        sa.Column(
            "kind",
            sa.Enum("totp", "passkey", name="factorkind", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=60), nullable=False),
        sa.Column("totp_secret", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
        sa.Column("totp_last_step", sa.BigInteger(), nullable=True),
        sa.Column("credential_id", sqlmodel.sql.sqltypes.AutoString(length=1400), nullable=True),
        sa.Column("public_key", sa.LargeBinary(), nullable=True),
        sa.Column("sign_count", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        _when("last_used_at"),
        sa.ForeignKeyConstraint(["staff_id"], ["staff.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("credential_id"),
    )
    op.create_index("ix_staff_factor_staff_id", "staff_factor", ["staff_id"])
    op.create_table(
        "staff_recovery_code",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("staff_id", sa.Integer(), nullable=False),
        sa.Column("code_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        _when("used_at"),
        sa.ForeignKeyConstraint(["staff_id"], ["staff.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_staff_recovery_code_staff_id", "staff_recovery_code", ["staff_id"])

    op.add_column("staff", _when("token_created_at"))
    op.add_column("staff", _when("token_last_used_at"))
    op.add_column("staff", _when("token_revoked_at"))
    # Existing tokens were issued when their staff member was created.
    op.execute(sa.text("UPDATE staff SET token_created_at = created_at"))

    op.add_column("staff_session", _when("last_seen_at"))
    op.add_column("staff_session", _when("factor_at"))
    op.add_column(
        "staff_session",
        sa.Column("challenge", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
    )
    # Sessions begun with a password alone would now count as lacking a second factor anyway;
    # ending them makes everyone sign in afresh under the new rules.
    op.execute(sa.text("DELETE FROM staff_session"))

    op.add_column(
        "audit_log",
        sa.Column("client_ip", sqlmodel.sql.sqltypes.AutoString(length=45), nullable=True),
    )


def downgrade() -> None:
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_column("client_ip")
    with op.batch_alter_table("staff_session") as batch:
        batch.drop_column("challenge")
        batch.drop_column("factor_at")
        batch.drop_column("last_seen_at")
    with op.batch_alter_table("staff") as batch:
        batch.drop_column("token_revoked_at")
        batch.drop_column("token_last_used_at")
        batch.drop_column("token_created_at")
    op.drop_index("ix_staff_recovery_code_staff_id", table_name="staff_recovery_code")
    op.drop_table("staff_recovery_code")
    op.drop_index("ix_staff_factor_staff_id", table_name="staff_factor")
    op.drop_table("staff_factor")

"""The staff second-factor, invitation and recovery-code tables (migrations 0005, 0012)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from mailing.models.base import _enum, utcnow

# ---------------------------------------------------------------------------------------------
# Staff second factors (migration 0005)


class FactorKind(StrEnum):
    TOTP = "totp"
    PASSKEY = "passkey"


class StaffFactor(SQLModel, table=True):
    """One second factor of a staff member: an authenticator app (TOTP) or a passkey."""

    __tablename__ = "staff_factor"

    id: int | None = Field(default=None, primary_key=True)
    staff_id: int = Field(foreign_key="staff.id", index=True, ondelete="CASCADE")
    kind: FactorKind = Field(sa_type=_enum(FactorKind))
    name: str = Field(max_length=60)
    # Encrypted with the secret keys (mailing.staff.totp.seal): a copy of the database alone
    # cannot make codes.
    totp_secret: str | None = Field(default=None, max_length=255)
    # The last 30-second step a code was accepted for: a code is refused at or before it.
    totp_last_step: int | None = Field(default=None, sa_type=sa.BigInteger)
    credential_id: str | None = Field(default=None, max_length=1400, unique=True)  # base64url
    public_key: bytes | None = Field(default=None, sa_type=sa.LargeBinary)
    sign_count: int = Field(default=0, sa_type=sa.BigInteger)
    created_at: datetime = Field(default_factory=utcnow)
    last_used_at: datetime | None = None


class StaffInvitation(SQLModel, table=True):
    """A one-time set-up link (signed, naming this row): invitation or second-factor reset."""

    __tablename__ = "staff_invitation"

    id: int | None = Field(default=None, primary_key=True)
    staff_id: int = Field(foreign_key="staff.id", index=True, ondelete="CASCADE")
    reason: str = Field(max_length=16)  # "invite" or "reset"
    created_by: int | None = Field(default=None, foreign_key="staff.id", ondelete="SET NULL")
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime
    used_at: datetime | None = None
    session_key: str | None = Field(default=None, max_length=64)  # the session it opened


class StaffRecoveryCode(SQLModel, table=True):
    """A single-use recovery code, kept only as a keyed hash."""

    __tablename__ = "staff_recovery_code"

    id: int | None = Field(default=None, primary_key=True)
    staff_id: int = Field(foreign_key="staff.id", index=True, ondelete="CASCADE")
    code_hash: str = Field(max_length=64)
    used_at: datetime | None = None

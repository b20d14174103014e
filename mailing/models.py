"""The database tables. Every table that holds personal data says so in PERSONAL_DATA_TABLES.

Times are timezone-aware UTC (SQLModel's UTCDateTime stores them so on SQLite too).
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from mailing.states import (
    ConsentEventKind,
    DeliveryStatus,
    StaffRole,
    SubscriberStatus,
    UpdateStatus,
)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _enum(cls: type[StrEnum]) -> sa.Enum:
    # Stored as plain VARCHAR: no database enum types to migrate.
    return sa.Enum(
        cls,
        native_enum=False,
        create_constraint=False,
        length=16,
        values_callable=lambda e: [m.value for m in e],
    )


class Subscriber(SQLModel, table=True):
    __tablename__ = "subscriber"
    # Never reuse an erased subscriber's id on SQLite: links name subscribers by id.
    __table_args__ = {"sqlite_autoincrement": True}

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(max_length=254)
    email_key: str = Field(max_length=254, unique=True)
    status: SubscriberStatus = Field(
        default=SubscriberStatus.PENDING, sa_type=_enum(SubscriberStatus), index=True
    )
    # Bumped to revoke every management link sent so far.
    token_version: int = Field(default=1)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    confirmed_at: datetime | None = None
    unsubscribed_at: datetime | None = None


class SubscriberTheme(SQLModel, table=True):
    __tablename__ = "subscriber_theme"

    subscriber_id: int = Field(foreign_key="subscriber.id", primary_key=True, ondelete="CASCADE")
    theme: str = Field(max_length=40, primary_key=True, index=True)


class ConsentText(SQLModel, table=True):
    """Exactly what a person was shown, kept once per version and addressed by its hash."""

    __tablename__ = "consent_text"

    sha256: str = Field(primary_key=True, max_length=64)
    kind: str = Field(max_length=32)  # "consent" or "privacy_notice"
    version: str = Field(max_length=32)
    text: str = Field(sa_type=sa.Text)
    created_at: datetime = Field(default_factory=utcnow)


class ConsentEvent(SQLModel, table=True):
    """Append-only evidence of consent: rows are inserted, never updated (a trigger enforces it)."""

    __tablename__ = "consent_event"

    id: int | None = Field(default=None, primary_key=True)
    subscriber_id: int = Field(foreign_key="subscriber.id", index=True, ondelete="CASCADE")
    kind: ConsentEventKind = Field(sa_type=_enum(ConsentEventKind))
    occurred_at: datetime = Field(default_factory=utcnow)
    channel: str = Field(max_length=32)  # form, api, email-link, one-click
    source: str | None = Field(default=None, max_length=500)  # the page it came from
    themes: str = Field(max_length=200)  # comma-separated slugs agreed to at that moment
    consent_text_sha256: str | None = Field(
        default=None, foreign_key="consent_text.sha256", max_length=64
    )
    privacy_notice_sha256: str | None = Field(
        default=None, foreign_key="consent_text.sha256", max_length=64
    )


class Suppression(SQLModel, table=True):
    """Keyed hashes of erased addresses: kept so we never mail them again, never reversible."""

    __tablename__ = "suppression"

    address_hash: str = Field(primary_key=True, max_length=64)
    reason: str = Field(max_length=32)
    created_at: datetime = Field(default_factory=utcnow)


class ErasureLog(SQLModel, table=True):
    """That an erasure happened, and how much went: no personal data."""

    __tablename__ = "erasure_log"

    id: int | None = Field(default=None, primary_key=True)
    erased_at: datetime = Field(default_factory=utcnow)
    reason: str = Field(max_length=32)  # request, retention, unconfirmed
    rows_deleted: int = 0


class Staff(SQLModel, table=True):
    __tablename__ = "staff"

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(max_length=254, unique=True)
    role: StaffRole = Field(sa_type=_enum(StaffRole))
    token_hash: str = Field(max_length=64, unique=True)
    password_hash: str | None = Field(default=None, max_length=255)
    created_at: datetime = Field(default_factory=utcnow)
    disabled_at: datetime | None = None
    failed_logins: int = 0
    locked_until: datetime | None = None


class StaffSession(SQLModel, table=True):
    __tablename__ = "staff_session"

    token_hash: str = Field(primary_key=True, max_length=64)
    staff_id: int = Field(foreign_key="staff.id", index=True, ondelete="CASCADE")
    csrf_token: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime


class Update(SQLModel, table=True):
    __tablename__ = "theme_update"

    id: int | None = Field(default=None, primary_key=True)
    subject: str = Field(max_length=200)
    body: str = Field(sa_type=sa.Text)
    themes: str = Field(max_length=200)  # comma-separated slugs
    status: UpdateStatus = Field(default=UpdateStatus.DRAFT, sa_type=_enum(UpdateStatus))
    created_by: int | None = Field(default=None, foreign_key="staff.id", ondelete="SET NULL")
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    send_started_at: datetime | None = None
    sent_at: datetime | None = None
    recipients: int = 0
    sent: int = 0
    failed: int = 0


class Delivery(SQLModel, table=True):
    """One row per update and recipient: the database, not the broker, says what is left to send."""

    __tablename__ = "delivery"
    __table_args__ = (
        sa.UniqueConstraint("update_id", "subscriber_id", name="uq_delivery_update_subscriber"),
        sa.Index("ix_delivery_update_status", "update_id", "status"),
    )

    id: int | None = Field(default=None, primary_key=True)
    update_id: int = Field(foreign_key="theme_update.id", ondelete="CASCADE")
    subscriber_id: int = Field(foreign_key="subscriber.id", index=True, ondelete="CASCADE")
    status: DeliveryStatus = Field(default=DeliveryStatus.PENDING, sa_type=_enum(DeliveryStatus))
    attempts: int = 0
    claimed_at: datetime | None = None
    enqueued_at: datetime | None = None
    sent_at: datetime | None = None
    error: str | None = Field(default=None, max_length=200)  # an SMTP code and class, no address


class AuditLog(SQLModel, table=True):
    __tablename__ = "audit_log"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow)
    staff_id: int | None = Field(default=None, foreign_key="staff.id", ondelete="SET NULL")
    action: str = Field(max_length=40)
    update_id: int | None = Field(default=None, foreign_key="theme_update.id", ondelete="SET NULL")
    detail: str | None = Field(default=None, max_length=500)


class SubscriberCountSnapshot(SQLModel, table=True):
    """Daily counts per theme and status, for the staff chart: figures only."""

    __tablename__ = "subscriber_count_snapshot"

    day: str = Field(primary_key=True, max_length=10)  # YYYY-MM-DD
    theme: str = Field(primary_key=True, max_length=40)
    status: str = Field(primary_key=True, max_length=16)
    count: int = 0


class SoftBounce(SQLModel, table=True):
    """A temporary delivery failure (4.x.x) of one update to one subscriber: enough of them on
    different updates within the window count as a hard bounce. Holds a status code, never the
    bounce message, and goes with the subscriber on erasure."""

    __tablename__ = "soft_bounce"
    __table_args__ = (
        sa.UniqueConstraint("subscriber_id", "update_id", name="uq_soft_bounce_subscriber_update"),
    )

    id: int | None = Field(default=None, primary_key=True)
    subscriber_id: int = Field(foreign_key="subscriber.id", index=True, ondelete="CASCADE")
    update_id: int = Field(foreign_key="theme_update.id", ondelete="CASCADE")
    status_code: str = Field(max_length=16)  # the DSN Status, e.g. 4.2.2
    occurred_at: datetime = Field(default_factory=utcnow)


# Tables whose rows can hold or point at a subscriber's personal data. The export and erasure
# tests check every table with a subscriber_id column appears here, so none is forgotten.
PERSONAL_DATA_TABLES: tuple[str, ...] = (
    "subscriber",
    "subscriber_theme",
    "consent_event",
    "delivery",
    "soft_bounce",
)

"""The database tables. Every table that holds personal data says so in PERSONAL_DATA_TABLES.

Times are timezone-aware UTC (SQLModel's UTCDateTime stores them so on SQLite too).
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from mailing.models.base import _enum
from mailing.models.base import utcnow as utcnow
from mailing.states import (
    ConsentEventKind,
    DeliveryStatus,
    DigestStatus,
    Frequency,
    NoticeKind,
    StaffRole,
    SubscriberStatus,
    UpdateStatus,
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
    unsubscribed_at: datetime | None = Field(default=None, index=True)
    # Weekly subscribers get a Saturday summary (mailing/sending/digests.py) instead of each update.
    frequency: Frequency = Field(
        default=Frequency.IMMEDIATE,
        sa_type=_enum(Frequency),
        sa_column_kwargs={"server_default": Frequency.IMMEDIATE.value},
    )
    # What stopped mail to them (mailing/deliverability/suppressions.py: a bounce, a complaint,
    # a relay's 5xx, an unsubscribe) and the update whose copy caused it (migration 0013).
    suppression_cause: str | None = Field(default=None, max_length=16)
    suppression_update_id: int | None = None


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
    # How often they agreed to hear from us (None on events before frequencies existed).
    frequency: Frequency | None = Field(default=None, sa_type=_enum(Frequency))


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
    # Wrong second-factor codes since one last succeeded (a right password does not reset it);
    # the step is locked until factor_locked_until, for longer after each lockout in a row.
    factor_failures: int = 0
    factor_locked_until: datetime | None = None
    factor_lockouts: int = 0
    # The API token's life: it expires MAILING_API_TOKEN_DAYS after token_created_at (None: a
    # token from before expiry existed, counted from created_at).
    token_created_at: datetime | None = Field(default_factory=utcnow)
    token_last_used_at: datetime | None = None
    token_revoked_at: datetime | None = None
    token_scope: str = Field(default="send", max_length=8)


class StaffSession(SQLModel, table=True):
    __tablename__ = "staff_session"

    token_hash: str = Field(primary_key=True, max_length=64)
    staff_id: int = Field(foreign_key="staff.id", index=True, ondelete="CASCADE")
    csrf_token: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime
    last_seen_at: datetime | None = Field(default_factory=utcnow)  # for the idle timeout
    # When a second factor was last given in this session; None: the password alone so far,
    # which opens only the second-factor and first-enrolment pages.
    factor_at: datetime | None = None
    challenge: str | None = Field(default=None, max_length=128)  # a pending WebAuthn ceremony's


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
    # When a scheduled update is due (UTC); None unless scheduled.
    send_at: datetime | None = None
    # Last time a worker settled a chunk of this send; the reconciler re-drives a send whose
    # workers all went quiet (see mailing/sending/reconcile.py).
    heartbeat_at: datetime | None = None
    redriven_at: datetime | None = None
    # Why a send was stopped by the service itself (an email it could not build).
    error: str | None = Field(default=None, max_length=300)
    # Shown in the public archive and feed once sent (staff may untick it when composing).
    published: bool = Field(default=True, sa_column_kwargs={"server_default": sa.true()})


_PENDING = f"status = '{DeliveryStatus.PENDING.value}'"


class Delivery(SQLModel, table=True):
    """One row per update and recipient: the database, not the broker, says what is left to send."""

    __tablename__ = "delivery"
    __table_args__ = (
        sa.UniqueConstraint("update_id", "subscriber_id", name="uq_delivery_update_subscriber"),
        sa.Index("ix_delivery_update_status", "update_id", "status"),
        # What the send claims from: an update's pending rows in id order. A partial index keeps
        # each claim a short ordered scan however many rows are settled or locked.
        sa.Index(
            "ix_delivery_pending",
            "update_id",
            "id",
            postgresql_where=sa.text(_PENDING),
            sqlite_where=sa.text(_PENDING),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    update_id: int = Field(foreign_key="theme_update.id", ondelete="CASCADE")
    subscriber_id: int = Field(foreign_key="subscriber.id", index=True, ondelete="CASCADE")
    status: DeliveryStatus = Field(default=DeliveryStatus.PENDING, sa_type=_enum(DeliveryStatus))
    attempts: int = 0
    claimed_at: datetime | None = None  # unused since leases became row locks; kept for old rows
    enqueued_at: datetime | None = None
    # After a 4xx or an unreachable relay: not to be tried again before this.
    retry_at: datetime | None = None
    sent_at: datetime | None = None
    error: str | None = Field(default=None, max_length=200)  # an SMTP code and class, no address
    failed_at: datetime | None = None  # when the relay refused it (5xx); migration 0013


class Notice(SQLModel, table=True):
    """The notice outbox: a one-off email owed to one subscriber (a confirmation link, an erase
    link...), written in the same transaction as the request that causes it and deleted once
    the relay took it. It names the subscriber by id, never by address."""

    __tablename__ = "notice"

    id: int | None = Field(default=None, primary_key=True)
    subscriber_id: int | None = Field(
        default=None, foreign_key="subscriber.id", index=True, ondelete="CASCADE"
    )
    # A notice to staff instead (an admin told of repeated failed sign-ins): whom it goes to,
    # and which account it is about.
    staff_id: int | None = Field(default=None, foreign_key="staff.id", ondelete="CASCADE")
    about_staff_id: int | None = Field(default=None, foreign_key="staff.id", ondelete="CASCADE")
    # A notice about an update (a review request, "it has gone").
    update_id: int | None = Field(default=None, foreign_key="theme_update.id", ondelete="CASCADE")
    kind: NoticeKind = Field(sa_type=_enum(NoticeKind, 20))
    themes: str = Field(default="", max_length=200)  # comma-separated slugs, for a confirmation
    frequency: Frequency = Field(default=Frequency.IMMEDIATE, sa_type=_enum(Frequency))
    created_at: datetime = Field(default_factory=utcnow)
    enqueued_at: datetime = Field(default_factory=utcnow)
    attempts: int = 0


class AuditLog(SQLModel, table=True):
    __tablename__ = "audit_log"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow)
    staff_id: int | None = Field(default=None, foreign_key="staff.id", ondelete="SET NULL")
    action: str = Field(max_length=40)
    update_id: int | None = Field(default=None, foreign_key="theme_update.id", ondelete="SET NULL")
    detail: str | None = Field(default=None, max_length=500)
    # A staff member's address when they acted, never a resident's.
    client_ip: str | None = Field(default=None, max_length=45)


class SubscriberCountSnapshot(SQLModel, table=True):
    """Daily counts per theme and status, for the staff chart: figures only."""

    __tablename__ = "subscriber_count_snapshot"

    day: str = Field(primary_key=True, max_length=10)  # YYYY-MM-DD
    theme: str = Field(primary_key=True, max_length=40)
    status: str = Field(primary_key=True, max_length=16)
    count: int = 0


class WeeklyDigest(SQLModel, table=True):
    """One weekly summary per subscriber and week: the unique key means it is sent at most once."""

    __tablename__ = "weekly_digest"
    __table_args__ = (
        sa.UniqueConstraint("subscriber_id", "week", name="uq_weekly_digest_subscriber_week"),
        # What is still to send, in id order, without reading the weeks already sent.
        sa.Index("ix_weekly_digest_status_id", "status", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    subscriber_id: int = Field(foreign_key="subscriber.id", index=True, ondelete="CASCADE")
    week: str = Field(max_length=10)  # the London date of the Saturday it is sent, YYYY-MM-DD
    update_ids: str = Field(sa_type=sa.Text)  # comma-separated ids of the updates it lists
    status: DigestStatus = Field(default=DigestStatus.PENDING, sa_type=_enum(DigestStatus))
    attempts: int = 0
    enqueued_at: datetime | None = None
    sent_at: datetime | None = None
    error: str | None = Field(default=None, max_length=200)  # an SMTP code and class, no address
    retry_at: datetime | None = None  # a deferred summary is not claimed again before it


class DigestWeek(SQLModel, table=True):
    """That a week's summaries were planned (once, by whichever beat tick came first): no
    personal data."""

    __tablename__ = "digest_week"

    week: str = Field(primary_key=True, max_length=10)
    planned_at: datetime = Field(default_factory=utcnow)
    digests: int = 0


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
    "notice",
    "weekly_digest",
    "soft_bounce",
)


class StoredImage(SQLModel, table=True):
    """An image staff uploaded for updates, re-encoded without metadata (updates/images.py).

    Served to everyone from one URL, /images/{key}.{ext}: no per-recipient address, so loading
    it can never tell us who read an email.
    """

    __tablename__ = "stored_image"

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=32, unique=True)  # random, so images cannot be listed by number
    content_type: str = Field(max_length=32)
    width: int
    height: int
    data: bytes = Field(sa_type=sa.LargeBinary)
    uploaded_by: int | None = Field(default=None, foreign_key="staff.id", ondelete="SET NULL")
    created_at: datetime = Field(default_factory=utcnow)


def table_of(model: type[SQLModel]) -> sa.Table:
    """The Core table behind a model, for set-based statements (states.transition)."""
    found = model.__table__  # type: ignore[attr-defined]
    assert isinstance(found, sa.Table)
    return found


# Tables in their own modules, re-exported here so `from mailing.models import X` finds every one.
from mailing.models.counts import FIXED_TABLES as FIXED_TABLES  # noqa: E402
from mailing.models.counts import BeatLease as BeatLease  # noqa: E402
from mailing.models.counts import DeliveryCount as DeliveryCount  # noqa: E402
from mailing.models.counts import ReachCount as ReachCount  # noqa: E402
from mailing.models.counts import SubscriberCount as SubscriberCount  # noqa: E402
from mailing.models.counts import ThemeBit as ThemeBit  # noqa: E402
from mailing.models.counts import UpdateLeftCount as UpdateLeftCount  # noqa: E402
from mailing.models.counts import UpdatePopulation as UpdatePopulation  # noqa: E402
from mailing.models.staff import FactorKind as FactorKind  # noqa: E402
from mailing.models.staff import StaffFactor as StaffFactor  # noqa: E402
from mailing.models.staff import StaffInvitation as StaffInvitation  # noqa: E402
from mailing.models.staff import StaffRecoveryCode as StaffRecoveryCode  # noqa: E402

"""The right to erasure and storage limitation: the emailed erase link, erasing a subscriber,
and the purge that erases what we no longer need.

Erasure keeps exactly two things: a keyed hash of the address in `suppression` (so we never mail
it again unless the person signs up afresh and confirms) and a line in `erasure_log` saying when
and how many rows went. Neither can be turned back into the address.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, SQLModel, col, select

from mailing.config import get_settings
from mailing.mail import outbox
from mailing.metrics import ERASURES
from mailing.models import (
    ConsentEvent,
    Delivery,
    ErasureLog,
    Subscriber,
    table_of,
)
from mailing.ratelimit import get_limiter
from mailing.states import (
    SUPPRESSED_SUBSCRIBER,
    ConsentEventKind,
    ErasureReason,
    NoticeKind,
    SubscriberStatus,
)
from mailing.subscribers import journal, records
from mailing.subscribers.addresses import Address

log = logging.getLogger(__name__)

LINK_EMAIL_WINDOW = 3600
# Every rate-limit key that names a person by their address hash; erasure forgets them all.
ADDRESS_LIMIT_PREFIXES = ("confirm-mail:", "erase-mail:", "export-mail:")
# A confirmation link is minted by the worker moments after the request is recorded; wait a
# little past its expiry before deleting the sign-up, so a link never outlives its record.
UNCONFIRMED_GRACE = timedelta(hours=1)
DELIVERY = table_of(Delivery)
SUBSCRIBER = table_of(Subscriber)


# --- Right to erasure -----------------------------------------------------------------------


def request_erasure(session: Session, address: Address) -> int | None:
    """Queue an erase-link email for this address in the outbox; returns the notice id, or None
    (unknown address, or too many asks). The caller commits, then publishes the notice.

    The caller answers the same whatever this returns, so the answer reveals nothing.
    """
    subscriber = records.by_key(session, address.key)
    # Count asks for unknown addresses too: the same work either way.
    allowed = _may_email(session, address.key, NoticeKind.ERASE_LINK)
    if subscriber is None or subscriber.id is None or not allowed:
        return None
    return outbox.queue(session, subscriber.id, NoticeKind.ERASE_LINK)


# The links emailed on request, to the subscriber's own address only, and their hourly caps.
LINK_LIMIT_PREFIXES = {NoticeKind.EXPORT_LINK: "export-mail:", NoticeKind.ERASE_LINK: "erase-mail:"}


def request_link(session: Session, subscriber: Subscriber, kind: NoticeKind) -> int | None:
    """Queue the download or erase link a subscriber asked for on their preferences page, within
    the address's hourly cap (shared with the erasure-request form); the notice id, or None."""
    if subscriber.id is None or not _may_email(session, subscriber.email_key, kind):
        return None
    return outbox.queue(session, subscriber.id, kind)


def _may_email(session: Session, email_key: str, kind: NoticeKind) -> bool:
    verdict = get_limiter().hit(
        f"{LINK_LIMIT_PREFIXES[kind]}{records.address_hash(email_key)}",
        get_settings().confirmations_per_address_per_hour,
        LINK_EMAIL_WINDOW,
    )
    # Erased before and signed up again, not yet confirmed: until they confirm, nothing but
    # the confirmation email goes to this address. Unconfirmed, the purge deletes it anyway.
    return verdict.allowed and not records.is_suppressed(session, email_key)


def _subscriber_tables() -> list[sa.Table]:
    """Every table with a subscriber_id column: found from the schema, so none is forgotten."""
    import mailing.models  # noqa: F401  (registers the tables)

    return [t for t in SQLModel.metadata.sorted_tables if "subscriber_id" in t.c]


def erase(
    session: Session,
    subscriber: Subscriber,
    reason: ErasureReason,
    *,
    suppress: bool = True,
    forget_limits: bool = True,
) -> int:
    """Delete every row about this subscriber; keep only the suppression hash and a log line.

    Returns the number of rows deleted. The caller commits. Their row is locked first, before
    their themes go (records.lock); if another erasure took it first, nothing is left to delete.
    """
    assert subscriber.id is not None
    sid, email_key = subscriber.id, subscriber.email_key
    records.lock(session, subscriber, to_delete=True)
    if session.get_bind().dialect.name == "sqlite":
        # Zero the deleted bytes in the file too, not just unlink them from the b-tree.
        session.execute(sa.text("PRAGMA secure_delete = ON"))
    rows = 0
    for table in reversed(_subscriber_tables()):
        result = session.execute(sa.delete(table).where(table.c.subscriber_id == sid))
        rows += max(int(getattr(result, "rowcount", 0) or 0), 0)
    table = SQLModel.metadata.tables["subscriber"]
    result = session.execute(sa.delete(table).where(table.c.id == sid))
    rows += max(int(getattr(result, "rowcount", 0) or 0), 0)
    if subscriber in session:
        session.expunge(subscriber)
    if suppress:
        # The keyed hash is kept so we never mail this address again; without the secret key
        # it cannot be turned back into the address, and a fresh confirmed sign-up lifts it.
        try:
            with session.begin_nested():  # two erasures of one person may race: one row wins
                records.suppress(session, email_key, "erased")
        except IntegrityError:
            pass
    session.add(ErasureLog(reason=ErasureReason(reason).value, rows_deleted=rows))
    journal.record(records.address_hash(email_key), keep_hash=suppress)
    if forget_limits:
        address_hash = records.address_hash(email_key)
        limiter = get_limiter()
        for prefix in ADDRESS_LIMIT_PREFIXES:
            limiter.forget(prefix, address_hash)
    ERASURES.inc()
    log.info("subscriber %s erased (%s): %d rows", sid, ErasureReason(reason).value, rows)
    return rows


# --- Storage limitation ---------------------------------------------------------------------


@dataclass(frozen=True)
class PurgeResult:
    unconfirmed: int  # pending sign-ups whose confirmation link had expired
    retained: int  # unsubscribed people kept past the retention period


def purge(session: Session, now: datetime) -> PurgeResult:
    """Erase what we no longer need at `now`. The caller commits.

    - A pending sign-up whose newest confirmation link has expired is deleted outright: the
      person never agreed, so nothing of them is kept (not even a suppression hash).
    - An unsubscribed (or bounced) person is reduced to the suppression hash once the retention
      period has passed since they left, unless they have asked to subscribe again meanwhile
      (their confirmation link must keep working).
    """
    settings = get_settings()
    confirm_cutoff = now - timedelta(days=settings.confirm_max_age_days) - UNCONFIRMED_GRACE
    retention_cutoff = now - timedelta(days=settings.unsubscribed_retention_days)

    unconfirmed = session.exec(
        select(Subscriber)
        .where(Subscriber.status == SubscriberStatus.PENDING)
        .where(col(Subscriber.updated_at) < confirm_cutoff)
        .order_by(col(Subscriber.id))
    ).all()
    for subscriber in unconfirmed:
        erase(session, subscriber, ErasureReason.UNCONFIRMED, suppress=False, forget_limits=False)

    asked_to_come_back = (
        select(ConsentEvent.id)
        .where(ConsentEvent.subscriber_id == Subscriber.id)
        .where(ConsentEvent.kind == ConsentEventKind.REQUESTED)
        .where(col(ConsentEvent.occurred_at) > Subscriber.unsubscribed_at)
        .where(col(ConsentEvent.occurred_at) >= confirm_cutoff)
        .exists()
    )
    lapsed = session.exec(
        select(Subscriber)
        # A bounced address is suppressed like an unsubscribed one, and kept no longer.
        .where(col(Subscriber.status).in_(SUPPRESSED_SUBSCRIBER))
        .where(
            sa.func.coalesce(Subscriber.unsubscribed_at, Subscriber.updated_at) < retention_cutoff
        )
        .where(~asked_to_come_back)
        .order_by(col(Subscriber.id))
    ).all()
    for subscriber in lapsed:
        # Rate-limit windows last an hour; a month on, there is nothing keyed to them left.
        erase(session, subscriber, ErasureReason.RETENTION, forget_limits=False)

    result = PurgeResult(unconfirmed=len(unconfirmed), retained=len(lapsed))
    if unconfirmed or lapsed:
        log.info(
            "purge: %d unconfirmed sign-ups deleted, %d unsubscribed reduced to a hash",
            result.unconfirmed,
            result.retained,
        )
    return result

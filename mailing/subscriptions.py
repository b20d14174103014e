"""Sign-up with double opt-in: the request, the confirmation email, and confirming.

The answer to a sign-up never says whether an address is known: a new, pending or
unsubscribed address is sent a confirmation link; an active one is sent a "you are already
subscribed" email instead. Themes asked for travel inside the signed confirmation link, so a
stranger's request can never change an active subscriber's choices.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import insert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col, select

from mailing import consent, links, subscribers
from mailing.addresses import Address
from mailing.config import get_settings
from mailing.deliverability.returnpath import for_notice
from mailing.emails import TO, Prepared, prepare
from mailing.mailer import Mailer
from mailing.models import Subscriber, SubscriberTheme, utcnow
from mailing.ratelimit import get_limiter
from mailing.states import ConsentEventKind, SubscriberStatus, SubscriberTransitions, check
from mailing.themes import ALL_THEMES, normalise_themes, theme_titles
from mailing.tokens import InvalidToken, Purpose, sign

CONFIRM_EMAIL_WINDOW = 3600


class Notice(StrEnum):
    CONFIRM = "confirm"
    ALREADY_SUBSCRIBED = "already_subscribed"


@dataclass(frozen=True)
class EmailToSend:
    notice: Notice
    subscriber_id: int
    themes: list[str]


def request_subscription(
    session: Session, address: Address, themes: list[str], *, channel: str, source: str | None
) -> EmailToSend | None:
    """Record a sign-up request; return the email to send, or None when the address's cap is hit.

    The caller commits and then enqueues the email, so the worker always finds the row.
    """
    subscriber_id, status = _pending_or_existing(session, address, themes)
    consent.record(
        session,
        subscriber_id,
        ConsentEventKind.REQUESTED,
        channel=channel,
        themes=themes,
        source=source,
    )
    settings = get_settings()
    verdict = get_limiter().hit(
        f"confirm-mail:{subscribers.address_hash(address.key)}",
        settings.confirmations_per_address_per_hour,
        CONFIRM_EMAIL_WINDOW,
    )
    if not verdict.allowed:
        return None
    notice = Notice.ALREADY_SUBSCRIBED if status == SubscriberStatus.ACTIVE else Notice.CONFIRM
    return EmailToSend(notice, subscriber_id, themes)


def _pending_or_existing(
    session: Session, address: Address, themes: list[str]
) -> tuple[int, SubscriberStatus]:
    """The subscriber for this address, created pending if new: one statement in the usual case.

    `INSERT ... ON CONFLICT DO NOTHING` lets the unique key decide a race between two requests
    for a new address (the loser waits for the winner's commit, then reads its row), with no
    look-up before it and no savepoint. A pending subscriber's themes follow the latest request;
    an active or unsubscribed one's change only through a signed link.
    """
    dialect_insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    for _ in range(2):  # a second go only if the row was erased between the two statements
        now = utcnow()
        created = session.execute(
            dialect_insert(Subscriber)
            .values(
                email=address.email,
                email_key=address.key,
                status=SubscriberStatus.PENDING,
                token_version=1,
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=["email_key"])
            .returning(col(Subscriber.id))
        ).scalar_one_or_none()
        if created is not None:
            if themes:
                session.execute(
                    insert(SubscriberTheme),
                    [{"subscriber_id": created, "theme": t} for t in themes],
                )
            return created, SubscriberStatus.PENDING
        # Locked, so simultaneous requests for one pending address replace its themes in turn.
        subscriber = session.exec(
            select(Subscriber).where(Subscriber.email_key == address.key).with_for_update()
        ).first()
        if subscriber is not None and subscriber.id is not None:
            if subscriber.status == SubscriberStatus.PENDING:
                subscribers.set_themes(session, subscriber, themes)
            return subscriber.id, subscriber.status
    raise RuntimeError("the address's subscriber row vanished twice during one sign-up")


def confirmation_token(subscriber: Subscriber, themes: list[str]) -> str:
    return sign(
        Purpose.CONFIRM,
        {"s": subscriber.id, "h": subscribers.link_check(subscriber), "t": themes},
    )


def confirm(session: Session, payload: dict[str, object]) -> tuple[Subscriber, bool]:
    """Activate the subscription a confirmation link names; the flag says whether it changed.

    Confirming twice changes nothing.
    """
    subscriber = session.get(Subscriber, payload["s"])
    if subscriber is None or not subscribers.matches_link_check(subscriber, payload.get("h")):
        raise InvalidToken("invalid")
    raw_themes = payload.get("t")
    if not isinstance(raw_themes, list) or not all(isinstance(t, str) for t in raw_themes):
        raise InvalidToken("invalid")
    if subscriber.status == SubscriberStatus.ACTIVE:
        return subscriber, False
    themes = normalise_themes(raw_themes)
    subscriber.status = check("subscriber", SubscriberTransitions.CONFIRM, subscriber.status)
    subscriber.confirmed_at = subscriber.updated_at = utcnow()
    subscriber.unsubscribed_at = None
    subscribers.set_themes(session, subscriber, themes)
    # A fresh double opt-in is the only way back after erasure: it lifts the suppression.
    subscribers.lift_suppression(session, subscriber.email_key)
    assert subscriber.id is not None
    consent.record(
        session, subscriber.id, ConsentEventKind.CONFIRMED, channel="email-link", themes=themes
    )
    session.add(subscriber)
    return subscriber, True


def build_notice(
    session: Session, email: EmailToSend
) -> tuple[Subscriber, Prepared, dict[str, str]] | None:
    """The confirmation or already-subscribed email for a subscriber, or None if they are gone."""
    subscriber = session.get(Subscriber, email.subscriber_id)
    if subscriber is None:
        return None
    settings = get_settings()
    if email.notice == Notice.CONFIRM:
        if subscriber.status == SubscriberStatus.ACTIVE:
            return None
        token = confirmation_token(subscriber, email.themes)
        prepared = prepare(
            "confirm",
            subject="Confirm your subscription to Health Inequalities Strategy updates",
            context={
                "confirm_url": f"{settings.base_url}/confirm/{token}",
                "themes": theme_titles(email.themes or list(ALL_THEMES)),
                "days": settings.confirm_max_age_days,
            },
        )
    else:
        prepared = prepare(
            "already_subscribed",
            subject="You are already subscribed to Health Inequalities Strategy updates",
            context=links.management_urls(subscriber),
        )
    return subscriber, prepared, {TO: subscriber.email}


def send_notice(session: Session, email: EmailToSend) -> bool:
    """Build and hand over one notice; False if there was nothing to send."""
    built = build_notice(session, email)
    if built is None:
        return False
    subscriber, prepared, values = built
    sender = for_notice(prepared.envelope_from, subscriber.id)
    with Mailer() as mailer:
        mailer.send(sender, values[TO], prepared.personalise(values))
    return True

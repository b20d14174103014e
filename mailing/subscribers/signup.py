"""Sign-up with double opt-in: the request, the confirmation email, and confirming.

The answer to a sign-up never says whether an address is known: a new, pending or
unsubscribed address is sent a confirmation link; an active one is sent a "you are already
subscribed" email instead. Themes asked for travel inside the signed confirmation link, so a
stranger's request can never change an active subscriber's choices, and it is not written into
their consent ledger either.

A confirmation link works once. It carries how many times its subscriber had confirmed when it
was made (the CONFIRMED events in the append-only consent ledger), and confirming adds one; so
after an unsubscribe, only a link from a new sign-up brings someone back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, insert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, select

from mailing.config import get_settings
from mailing.errors import InvalidLink, LinkProblem
from mailing.mail import outbox
from mailing.models import ConsentEvent, Subscriber, SubscriberTheme, table_of, utcnow
from mailing.ratelimit import get_limiter
from mailing.states import (
    ConsentChannel,
    ConsentEventKind,
    Frequency,
    NoticeKind,
    SubscriberStatus,
    SubscriberTransitions,
    transition,
)
from mailing.subscribers import consent, records
from mailing.subscribers.addresses import Address
from mailing.subscribers.tokens import Purpose, sign
from mailing.themes import normalise_themes

CONFIRM_EMAIL_WINDOW = 3600
SUBSCRIBER = table_of(Subscriber)
SUBSCRIBER_THEME = table_of(SubscriberTheme)
# New addresses' rows, none for a known address (False: SQLite, True: PostgreSQL). Core
# statements, built once: the ORM's bulk path, autoflush and building a statement anew cost
# more CPU than the statements (bench/subscribe.py; the A/B is in the log).
_CREATE_PENDING = {
    postgres: dialect_insert(SUBSCRIBER)
    .on_conflict_do_nothing(index_elements=["email_key"])
    .returning(SUBSCRIBER.c.id, SUBSCRIBER.c.email_key)
    for postgres, dialect_insert in ((False, sqlite_insert), (True, pg_insert))
}
_ADD_THEME = insert(SUBSCRIBER_THEME)


@dataclass(frozen=True)
class SignupRequest:
    """One sign-up as the form or the API gave it, validated."""

    address: Address
    themes: list[str]
    channel: ConsentChannel
    source: str | None
    frequency: Frequency = Frequency.IMMEDIATE


def request_subscription(
    session: Session,
    address: Address,
    themes: list[str],
    *,
    channel: ConsentChannel,
    source: str | None,
    frequency: Frequency = Frequency.IMMEDIATE,
) -> int | None:
    """Record a sign-up request and queue its email in the outbox, in the caller's transaction;
    returns the notice id (None when the address's hourly cap is hit: no email).

    The caller commits, then publishes the notice; if that is lost, the reconciler re-drives it.
    """
    request = SignupRequest(address, themes, channel, source, frequency)
    return request_subscriptions(session, [request])[0]


def request_subscriptions(session: Session, requests: Sequence[SignupRequest]) -> list[int | None]:
    """Record several sign-up requests in the caller's transaction, as `request_subscription`
    records one, with a few statements for all of them: one insert of the new addresses, one of
    their themes, one of the ledger's events, one of the notices, and one Redis round trip for
    the hourly caps. Returns each request's notice id, in order (None where a cap was hit).

    New addresses are written in the order of their keys, so two batches that share addresses
    take the unique key's locks in the same order and cannot deadlock. An address already known
    (or asked for twice in the batch) goes through `_pending_or_existing` after the new ones, in
    the order of their keys too, and for one address in the order of its requests: the latest
    request for a pending address sets its themes.
    """
    found: dict[int, tuple[int, SubscriberStatus]] = {}
    firsts: dict[str, int] = {}
    for i, request in enumerate(requests):
        firsts.setdefault(request.address.key, i)
    fresh = sorted(firsts.values(), key=lambda i: requests[i].address.key)
    if fresh:
        connection = session.connection()
        now = utcnow()
        created = {
            key: int(subscriber_id)
            for subscriber_id, key in connection.execute(
                _CREATE_PENDING[connection.dialect.name == "postgresql"],
                [_pending_row(requests[i].address, now) for i in fresh],
            )
        }
        themes = [
            {"subscriber_id": created[r.address.key], "theme": t}
            for r in (requests[i] for i in fresh)
            if r.address.key in created
            for t in r.themes
        ]
        if themes:
            connection.execute(_ADD_THEME, themes)
        for i in fresh:
            if (subscriber_id := created.get(requests[i].address.key)) is not None:
                found[i] = (subscriber_id, SubscriberStatus.PENDING)
    for i in sorted(range(len(requests)), key=lambda i: (requests[i].address.key, i)):
        if i not in found:  # its address met the unique key above: known, or earlier in the batch
            found[i] = _pending_or_existing(
                session, requests[i].address, requests[i].themes, known=True
            )
    consent.record_many(
        session,
        [
            consent.Event(
                found[i][0],
                ConsentEventKind.REQUESTED,
                channel=r.channel,
                themes=r.themes,
                source=r.source,
                frequency=r.frequency,
            )
            for i, r in enumerate(requests)
            # Anyone can ask for an active address: what a stranger asked for is not the
            # owner's consent and must not read as theirs in the ledger or the export. Such a
            # request changes nothing (the owner is emailed "already subscribed"), so nothing
            # is recorded; a pending or unsubscribed address's request is the first half of
            # a double opt-in and stays.
            if found[i][1] != SubscriberStatus.ACTIVE
        ],
    )
    verdicts = get_limiter().hit_many(
        [f"confirm-mail:{records.address_hash(r.address.key)}" for r in requests],
        get_settings().confirmations_per_address_per_hour,
        CONFIRM_EMAIL_WINDOW,
    )
    owed = [i for i, verdict in enumerate(verdicts) if verdict.allowed]
    notice_ids = outbox.queue_many(
        session,
        [
            outbox.Owed(found[i][0], NoticeKind.ALREADY_SUBSCRIBED, [], Frequency.IMMEDIATE)
            if found[i][1] == SubscriberStatus.ACTIVE  # nothing of the stranger's is kept
            else outbox.Owed(
                found[i][0], NoticeKind.CONFIRM, requests[i].themes, requests[i].frequency
            )
            for i in owed
        ],
    )
    answers: list[int | None] = [None] * len(requests)
    for i, notice_id in zip(owed, notice_ids, strict=True):
        answers[i] = notice_id
    return answers


def _pending_row(address: Address, now: datetime) -> dict[str, object]:
    return {
        "email": address.email,
        "email_key": address.key,
        "status": SubscriberStatus.PENDING,
        "token_version": 1,
        "created_at": now,
        "updated_at": now,
    }


def _pending_or_existing(
    session: Session, address: Address, themes: list[str], *, known: bool = False
) -> tuple[int, SubscriberStatus]:
    """The subscriber for this address, created pending if new: one statement in the usual case.

    `INSERT ... ON CONFLICT DO NOTHING` lets the unique key decide a race between two requests
    for a new address (the loser waits for the winner's commit, then reads its row), with no
    look-up before it and no savepoint. A pending subscriber's themes follow the latest request;
    an active or unsubscribed one's change only through a signed link. `known`: the caller's
    own insert for this address just met the unique key, so the look-up comes first.
    """
    connection = session.connection()
    create = _CREATE_PENDING[connection.dialect.name == "postgresql"]
    for attempt in range(2):  # a second go only if the row was erased between the statements
        created = None
        if not (known and attempt == 0):
            created = connection.execute(create, _pending_row(address, utcnow())).scalar()
        if created is not None:
            if themes:
                connection.execute(
                    _ADD_THEME,
                    [{"subscriber_id": created, "theme": t} for t in themes],
                )
            return created, SubscriberStatus.PENDING
        # Locked, so simultaneous requests for one pending address replace its themes in turn.
        subscriber = session.exec(
            select(Subscriber).where(Subscriber.email_key == address.key).with_for_update()
        ).first()
        if subscriber is not None and subscriber.id is not None:
            if subscriber.status == SubscriberStatus.PENDING:
                records.set_themes(session, subscriber, themes)
            return subscriber.id, subscriber.status
    raise RuntimeError("the address's subscriber row vanished twice during one sign-up")


def confirmation_token(
    subscriber: Subscriber,
    themes: list[str],
    confirmed: int = 0,
    frequency: Frequency = Frequency.IMMEDIATE,
) -> str:
    """`confirmed`: how many times the subscriber has confirmed so far (confirmations_of). The
    frequency travels signed with the themes, for the same reason (see the docstring)."""
    return sign(
        Purpose.CONFIRM,
        {
            "s": subscriber.id,
            "h": records.link_check(subscriber),
            "t": themes,
            "n": confirmed,
            "f": frequency.value,
        },
    )


def confirmations_of(session: Session, subscriber_id: int) -> int:
    """How many times this subscriber has confirmed: their ledger's CONFIRMED events."""
    return session.exec(
        select(func.count())
        .select_from(ConsentEvent)
        .where(ConsentEvent.subscriber_id == subscriber_id)
        .where(ConsentEvent.kind == ConsentEventKind.CONFIRMED)
    ).one()


def confirmable(
    session: Session, payload: dict[str, object], *, lock: bool = False
) -> tuple[Subscriber, list[str], Frequency]:
    """The subscriber, themes and frequency a confirmation link names; InvalidLink if it
    cannot confirm.

    An active subscriber's link stays harmless to follow (it changes nothing). Otherwise the
    link must have been made since their last confirmation: a used link is refused.
    """
    subscriber = session.get(Subscriber, payload["s"], with_for_update=lock)
    if subscriber is None or not records.matches_link_check(subscriber, payload.get("h")):
        raise InvalidLink(LinkProblem.INVALID)
    raw_themes = payload.get("t")
    if not isinstance(raw_themes, list) or not all(isinstance(t, str) for t in raw_themes):
        raise InvalidLink(LinkProblem.INVALID)
    raw_frequency = payload.get("f", Frequency.IMMEDIATE.value)  # links made before frequencies
    if raw_frequency not in Frequency.__members__.values():
        raise InvalidLink(LinkProblem.INVALID)
    assert subscriber.id is not None
    # Links made before the count was signed into them carry none: they predate any confirmation.
    made_after = payload.get("n", 0)
    if subscriber.status != SubscriberStatus.ACTIVE and made_after != confirmations_of(
        session, subscriber.id
    ):
        raise InvalidLink(LinkProblem.USED)
    return subscriber, raw_themes, Frequency(str(raw_frequency))


def confirm(session: Session, payload: dict[str, object]) -> tuple[Subscriber, int | None]:
    """Activate the subscription a confirmation link names, and queue the welcome email in the
    same transaction; returns the subscriber and the welcome's notice id (None: it was active
    already, and confirming twice changes nothing). A link already used cannot confirm again
    after an unsubscribe (InvalidLink). The caller commits, then publishes the notice.
    """
    # Locked: two clicks on one link at once must not both confirm.
    subscriber, raw_themes, frequency = confirmable(session, payload, lock=True)
    if subscriber.status == SubscriberStatus.ACTIVE:
        return subscriber, None
    themes = normalise_themes(raw_themes)
    now = utcnow()
    assert subscriber.id is not None
    # The named transition, as every status change (the row is locked above, so it wins).
    confirmed = {"frequency": frequency, "confirmed_at": now, "updated_at": now}
    where = SUBSCRIBER.c.id == subscriber.id
    changed = transition(
        session,
        SUBSCRIBER,
        SubscriberTransitions.CONFIRM,
        where,
        confirmed | {"unsubscribed_at": None},
    )
    session.expire(subscriber)
    if not changed:
        raise InvalidLink(LinkProblem.INVALID)
    records.set_themes(session, subscriber, themes)
    # A fresh double opt-in is the only way back after erasure: it lifts the suppression.
    records.lift_suppression(session, subscriber.email_key)
    consent.record(
        session,
        subscriber.id,
        ConsentEventKind.CONFIRMED,
        channel=ConsentChannel.EMAIL_LINK,
        themes=themes,
        frequency=subscriber.frequency,
    )
    session.add(subscriber)
    return subscriber, outbox.queue(session, subscriber.id, NoticeKind.WELCOME)

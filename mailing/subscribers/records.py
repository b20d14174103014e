"""Subscriber records: lookup, themes, and the suppression list of erased addresses."""

from __future__ import annotations

import hmac
from typing import Protocol

from sqlmodel import Session, col, delete, select

from mailing.config import get_settings
from mailing.errors import NotFound
from mailing.models import Subscriber, SubscriberTheme, Suppression, utcnow
from mailing.subscribers.addresses import keyed_hash, keyed_hashes
from mailing.themes import ALL_THEMES


def by_key(session: Session, email_key: str) -> Subscriber | None:
    return session.exec(select(Subscriber).where(Subscriber.email_key == email_key)).first()


def themes_of(session: Session, subscriber_id: int) -> list[str]:
    rows = session.exec(
        select(SubscriberTheme.theme).where(SubscriberTheme.subscriber_id == subscriber_id)
    ).all()
    chosen = set(rows)
    return [t for t in ALL_THEMES if t in chosen]


def lock(session: Session, subscriber: Subscriber, *, to_delete: bool = False) -> bool:
    """Take the subscriber's row lock, held until the transaction ends, and read their row
    afresh into `subscriber` (one of this session's); False if the row is gone (erased).

    Every path that changes a subscriber's themes or status locks their row first, before it
    touches a theme row, as the reach-count triggers do (migrations 0014, 0018: the subscriber
    rows, then the shard): two changes of one person's themes then run one after the other,
    the second deleting the rows the first committed (not the ones it saw before waiting, which
    left the first's to clash with its inserts: a duplicate key), and no path holds theme rows
    while it waits for a subscriber row another path holds while it waits for those theme rows
    (a deadlock). PostgreSQL: FOR NO KEY UPDATE, as the triggers and any UPDATE of the row take
    it; FOR UPDATE for a row about to be deleted. SQLite (one writer) takes no row locks: a
    plain read, and the first write there holds the database's write lock until the commit.
    """
    assert subscriber.id is not None
    found = session.exec(
        select(Subscriber)
        .where(Subscriber.id == subscriber.id)
        .with_for_update(key_share=not to_delete)
        .execution_options(populate_existing=True)
    ).first()
    assert found is None or found is subscriber, "lock a subscriber of this session"
    return found is not None


def set_themes(session: Session, subscriber: Subscriber, themes: list[str]) -> None:
    """Replace the subscriber's themes, their row locked first (`lock`; a caller deciding on
    their status or themes has locked it before it read them)."""
    assert subscriber.id is not None
    if not lock(session, subscriber):
        raise NotFound("No subscriber has that id (erased, or never here).")
    session.exec(delete(SubscriberTheme).where(col(SubscriberTheme.subscriber_id) == subscriber.id))
    session.add_all(SubscriberTheme(subscriber_id=subscriber.id, theme=t) for t in themes)
    subscriber.updated_at = utcnow()


def address_hash(email_key: str) -> str:
    """The keyed hash made with the signing key: what rate-limit keys and suppression rows hold."""
    return keyed_hash(email_key, get_settings().secret_key_list[0])


class LinkSubject(Protocol):
    """What a link is made from: a Subscriber, or the few columns a send reads for each copy."""

    @property
    def id(self) -> int | None: ...

    @property
    def token_version(self) -> int: ...

    @property
    def email_key(self) -> str: ...


def link_check(subscriber: LinkSubject) -> str:
    """A short keyed digest of the address, put in links so a token names one person, not an id."""
    return address_hash(subscriber.email_key)[:16]


def matches_link_check(subscriber: Subscriber, check: object) -> bool:
    if not isinstance(check, str):
        return False
    candidates = keyed_hashes(subscriber.email_key, get_settings().secret_key_list)
    return any(hmac.compare_digest(c[:16], check) for c in candidates)


def is_suppressed(session: Session, email_key: str) -> bool:
    hashes = keyed_hashes(email_key, get_settings().secret_key_list)
    return (
        session.exec(select(Suppression).where(col(Suppression.address_hash).in_(hashes))).first()
        is not None
    )


def suppress(session: Session, email_key: str, reason: str) -> None:
    h = address_hash(email_key)
    if session.get(Suppression, h) is None:
        session.add(Suppression(address_hash=h, reason=reason))


def lift_suppression(session: Session, email_key: str) -> None:
    hashes = keyed_hashes(email_key, get_settings().secret_key_list)
    session.exec(delete(Suppression).where(col(Suppression.address_hash).in_(hashes)))

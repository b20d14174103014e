"""Subscriber records: lookup, themes, and the suppression list of erased addresses."""

from __future__ import annotations

import hmac
from typing import Protocol

from sqlmodel import Session, col, delete, select

from mailing.config import get_settings
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


def set_themes(session: Session, subscriber: Subscriber, themes: list[str]) -> None:
    assert subscriber.id is not None
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

"""The links that act for a subscriber without a login: unsubscribe, preferences, data, erasure.

Unsubscribe and preferences links never expire but carry the subscriber's token_version, which
erasure bumps (and deletes), so they die with the data. Each purpose has its own salt. Data and
erasure links are only ever emailed to the subscriber's own address, never shown on a page.
"""

from __future__ import annotations

from sqlmodel import Session

from mailing.config import get_settings
from mailing.errors import InvalidLink, LinkProblem
from mailing.models import Subscriber
from mailing.subscribers import records
from mailing.subscribers.tokens import LINK_PATHS, TIMED, Purpose, sign, sign_link, verify


def token_for(purpose: Purpose, subscriber: records.LinkSubject) -> str:
    check = records.link_check(subscriber)
    if purpose not in TIMED and subscriber.id is not None:
        return sign_link(purpose, subscriber.id, subscriber.token_version, check)
    return sign(purpose, {"s": subscriber.id, "v": subscriber.token_version, "h": check})


def mail_tokens(subscriber: records.LinkSubject) -> tuple[str, str]:
    """The unsubscribe and preferences tokens of one copy of an email (the address digest they
    share is computed once)."""
    assert subscriber.id is not None
    check = records.link_check(subscriber)
    version = subscriber.token_version
    return (
        sign_link(Purpose.UNSUBSCRIBE, subscriber.id, version, check),
        sign_link(Purpose.MANAGE, subscriber.id, version, check),
    )


def url_for(purpose: Purpose, subscriber: Subscriber) -> str:
    return f"{get_settings().base_url}{LINK_PATHS[purpose]}{token_for(purpose, subscriber)}"


def management_urls(subscriber: Subscriber) -> dict[str, str]:
    return {
        "unsubscribe_url": url_for(Purpose.UNSUBSCRIBE, subscriber),
        "preferences_url": url_for(Purpose.MANAGE, subscriber),
    }


def subscriber_for(session: Session, purpose: Purpose, token: str) -> Subscriber:
    """The subscriber a link names; InvalidLink if forged, expired, revoked or misdirected."""
    payload = verify(purpose, token)
    subscriber = session.get(Subscriber, payload["s"])
    if subscriber is None or not records.matches_link_check(subscriber, payload.get("h")):
        raise InvalidLink(LinkProblem.INVALID)
    if payload.get("v", subscriber.token_version) != subscriber.token_version:
        raise InvalidLink(LinkProblem.INVALID)
    return subscriber

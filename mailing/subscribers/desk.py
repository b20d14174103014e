"""The support desk: an admin finds one subscriber by their exact address and does for them
what they asked for by phone, letter or email, through the resident's own code paths.

Only an exact address finds anyone (case-insensitive, as identity is): no partial match, no
wildcard, no list. Every look-up, found or not, and every action is audited with the staff
member, the reason and the subscriber's id, never the address; an address typed into a reason
is stored as "[address removed]".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from mailing.errors import Conflict, Invalid, NotActive, NotFound, TooMany
from mailing.models import Delivery, Subscriber, WeeklyDigest
from mailing.staff.audit import AuditAction, audit
from mailing.states import (
    DELIVERED,
    ConsentChannel,
    DigestStatus,
    ErasureReason,
    NoticeKind,
    SubscriberStatus,
)
from mailing.subscribers import consent, erasure, records, rights, signup
from mailing.subscribers.addresses import Address, InvalidAddress, normalise
from mailing.themes import UnknownTheme, normalise_themes

CHANNEL = ConsentChannel.SUPPORT_DESK
MAX_REASON = 300
ADDRESS = re.compile(r"[^\s@<>(),;:\"'\[\]]+@[^\s@<>(),;:\"'\[\]]+")
REMOVED = "[address removed]"


class DeskAction(StrEnum):
    """What staff may do for a subscriber (each a path under /admin/subscribers/{id}/)."""

    UNSUBSCRIBE = "unsubscribe"
    RESEND_CONFIRMATION = "resend-confirmation"
    SEND_EXPORT_LINK = "send-export-link"
    SEND_ERASE_LINK = "send-erase-link"
    ERASE = "erase"
    THEMES = "themes"


def clean_reason(raw: object) -> str:
    """The reason as stored: required, one line, no address in it."""
    if not isinstance(raw, str) or not raw.strip():
        raise Invalid({"reason": "Say why: what the person asked for, and how they asked."})
    text = " ".join(raw.split())[:MAX_REASON]
    return ADDRESS.sub(REMOVED, text)


def _audit(session: Session, staff_id: int | None, what: str, detail: str) -> None:
    audit(session, staff_id, AuditAction.DESK, detail=f"{what}: {detail}"[:500])


def look_up(session: Session, staff_id: int | None, raw_email: object) -> Subscriber:
    """The one subscriber with exactly this address; NotFound (audited too) otherwise."""
    try:
        address = normalise(raw_email if isinstance(raw_email, str) else "")
    except InvalidAddress:
        _audit(session, staff_id, "look-up", "not an address, nobody found")
        session.commit()
        raise Invalid({"email": "Give the person's whole email address."}) from None
    found = records.by_key(session, address.key)
    _audit(
        session,
        staff_id,
        "look-up",
        f"subscriber {found.id}" if found is not None else "nobody found",
    )
    session.commit()
    if found is None:
        raise NotFound("No subscriber has exactly that address.")
    return found


def view(session: Session, subscriber: Subscriber) -> dict[str, Any]:
    """What staff see: status, choices, dates, the consent record and counts of mail sent."""
    assert subscriber.id is not None
    sid = subscriber.id
    updates_sent = session.exec(
        select(sa.func.count())
        .select_from(Delivery)
        .where(col(Delivery.subscriber_id) == sid)
        .where(col(Delivery.status).in_(DELIVERED))
    ).one()
    summaries_sent = session.exec(
        select(sa.func.count())
        .select_from(WeeklyDigest)
        .where(col(WeeklyDigest.subscriber_id) == sid)
        .where(col(WeeklyDigest.status) == DigestStatus.SENT)
    ).one()
    return {
        "id": sid,
        "status": subscriber.status.value,
        "themes": records.themes_of(session, sid),
        "frequency": subscriber.frequency.value,
        "created_at": subscriber.created_at.isoformat(),
        "confirmed_at": subscriber.confirmed_at.isoformat() if subscriber.confirmed_at else None,
        "unsubscribed_at": (
            subscriber.unsubscribed_at.isoformat() if subscriber.unsubscribed_at else None
        ),
        "updated_at": subscriber.updated_at.isoformat(),
        "suppressed": records.is_suppressed(session, subscriber.email_key),
        "consent": consent.ledger(session, sid),
        "counts": {"updates_sent": int(updates_sent), "summaries_sent": int(summaries_sent)},
    }


@dataclass(frozen=True)
class Done:
    """What an action did: a notice to publish after the commit, and whether they still exist."""

    notice_id: int | None = None
    erased: bool = False


def act(
    session: Session,
    staff_id: int | None,
    subscriber_id: int,
    action: DeskAction,
    reason: object,
    themes: object = None,
) -> Done:
    """Do `action` for the subscriber, as their own link would, and audit it. The caller
    commits, then publishes the notice if there is one."""
    why = clean_reason(reason)
    subscriber = session.get(Subscriber, subscriber_id, with_for_update=True)
    if subscriber is None:
        raise NotFound("No subscriber has that id (erased, or never here).")
    done = _do(session, subscriber, action, themes)
    _audit(session, staff_id, action.value, f"subscriber {subscriber_id}; reason: {why}")
    return done


def _do(session: Session, subscriber: Subscriber, action: DeskAction, themes: object) -> Done:
    if action == DeskAction.UNSUBSCRIBE:
        rights.unsubscribe(session, subscriber, channel=CHANNEL)
        return Done()
    if action == DeskAction.ERASE:
        erasure.erase(session, subscriber, ErasureReason.REQUEST)
        return Done(erased=True)
    if action == DeskAction.THEMES:
        try:
            chosen = normalise_themes(_slugs(themes), empty_means_all=False)
        except UnknownTheme as exc:
            raise Invalid({"themes": str(exc)}) from None
        try:
            rights.change_themes(session, subscriber, chosen, channel=CHANNEL)
        except NotActive as exc:
            raise Conflict(f"Themes change only on an active subscription ({exc}).") from None
        return Done()
    if action == DeskAction.RESEND_CONFIRMATION:
        if subscriber.status != SubscriberStatus.PENDING:
            raise Conflict(f"Only a pending sign-up is confirmed; this one is {subscriber.status}.")
        address = Address(subscriber.email, subscriber.email_key)
        notice_id = signup.request_subscription(
            session,
            address,
            records.themes_of(session, subscriber.id or 0),
            channel=CHANNEL,
            source=None,
            frequency=subscriber.frequency,
        )
        return _sent(notice_id)
    export = action == DeskAction.SEND_EXPORT_LINK
    kind = NoticeKind.EXPORT_LINK if export else NoticeKind.ERASE_LINK
    return _sent(erasure.request_link(session, subscriber, kind))


def _sent(notice_id: int | None) -> Done:
    if notice_id is None:
        raise TooMany(
            "Not sent: this address has had as many such emails as it may this hour "
            "(or is suppressed). Try again later.",
            3600,
        )
    return Done(notice_id=notice_id)


def _slugs(themes: object) -> list[str]:
    if not isinstance(themes, list) or not all(isinstance(t, str) for t in themes):
        raise Invalid({"themes": "Give a list of theme slugs."})
    return themes


def reload(session: Session, subscriber_id: int) -> Subscriber:
    subscriber = session.get(Subscriber, subscriber_id, populate_existing=True)
    if subscriber is None:
        raise NotFound("No subscriber has that id.")
    return subscriber

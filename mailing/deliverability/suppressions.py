"""Why each subscriber is suppressed, and undoing a storm.

Every suppression records its cause on the subscriber (`suppression_cause`: a hard bounce, a
complaint, a relay's 5xx, an unsubscribe) with the update whose copy caused it and the time
(`unsubscribed_at`). When a relay answered 550 to everyone for ten minutes, an admin lists what
one update or one time window suppressed, reinstates those people (only a bounce or a relay's
5xx: never an unsubscribe, a complaint, and an erased person is gone), and re-sends the update
to the copies the relay refused in that window. Each step is audited with counts, no address.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from mailing.db import get_engine
from mailing.errors import Invalid
from mailing.models import Delivery, Subscriber, table_of, utcnow
from mailing.staff.audit import AuditAction, audit
from mailing.states import (
    SUPPRESSED_SUBSCRIBER,
    DeliveryTransitions,
    SubscriberStatus,
    SubscriberTransitions,
    transition,
)

log = logging.getLogger(__name__)

SUBSCRIBER = table_of(Subscriber)
DELIVERY = table_of(Delivery)
LIST_LIMIT = 1000


class Cause(StrEnum):
    BOUNCE = "bounce"
    COMPLAINT = "complaint"
    RELAY_5XX = "relay-5xx"
    UNSUBSCRIBE = "unsubscribe"


# What an admin may undo: the address was judged undeliverable, not the person's wish.
REINSTATABLE = frozenset({Cause.BOUNCE, Cause.RELAY_5XX})


def cause_values(cause: Cause, update_id: int | None) -> dict[str, Any]:
    """The columns a suppression sets, for the statement that suppresses."""
    return {"suppression_cause": cause.value, "suppression_update_id": update_id}


def relay_refused(update_id: int, delivery_ids: list[int]) -> int:
    """The relay answered 5xx for these copies of the update: their subscribers are suppressed
    as bounced (cause relay-5xx), their other pending copies cancelled, and the refusal time
    kept on each copy. Its own transaction, after the chunk's. Returns subscribers suppressed."""
    if not delivery_ids:
        return 0
    now = utcnow()
    with get_engine().begin() as conn:
        conn.execute(
            sa.update(DELIVERY).where(DELIVERY.c.id.in_(delivery_ids)).values(failed_at=now)
        )
        whose = sa.select(DELIVERY.c.subscriber_id).where(DELIVERY.c.id.in_(delivery_ids))
        ids = sorted(int(i) for i in conn.execute(whose).scalars())
        # Deliveries before subscribers: the lock order of the send pipeline.
        transition(conn, DELIVERY, DeliveryTransitions.CANCEL, DELIVERY.c.subscriber_id.in_(ids))
        suppressed = transition(
            conn,
            SUBSCRIBER,
            SubscriberTransitions.BOUNCE,
            SUBSCRIBER.c.id.in_(ids),
            {"unsubscribed_at": now, "updated_at": now, **cause_values(Cause.RELAY_5XX, update_id)},
        )
    if suppressed:
        log.info("update %s: %s subscribers suppressed after a relay 5xx", update_id, suppressed)
    return suppressed


@dataclass(frozen=True)
class Selection:
    """Which suppressions: those one update caused, or those in a time window (or both)."""

    update_id: int | None = None
    cause: Cause | None = None
    since: datetime | None = None
    until: datetime | None = None

    def check(self) -> None:
        if self.update_id is None and (self.since is None or self.until is None):
            raise Invalid({"since": "Give an update_id, or both since and until (ISO 8601)."})
        for name, value in (("since", self.since), ("until", self.until)):
            if value is not None and value.tzinfo is None:
                raise Invalid({name: "Give the time with its UTC offset."})
        if self.since and self.until and self.since > self.until:
            raise Invalid({"until": "The window ends before it starts."})

    def where(self) -> sa.ColumnElement[bool]:
        self.check()
        clauses: list[sa.ColumnElement[bool]] = [
            SUBSCRIBER.c.status.in_([s.value for s in SUPPRESSED_SUBSCRIBER]),
            SUBSCRIBER.c.suppression_cause.is_not(None),
        ]
        if self.update_id is not None:
            clauses.append(SUBSCRIBER.c.suppression_update_id == self.update_id)
        if self.cause is not None:
            clauses.append(SUBSCRIBER.c.suppression_cause == self.cause.value)
        if self.since is not None:
            clauses.append(SUBSCRIBER.c.unsubscribed_at >= self.since)
        if self.until is not None:
            clauses.append(SUBSCRIBER.c.unsubscribed_at <= self.until)
        return sa.and_(*clauses)


def listing(session: Session, selection: Selection) -> dict[str, Any]:
    """The suppressions selected, by subscriber id (never an address), newest first."""
    rows = session.execute(
        sa.select(
            SUBSCRIBER.c.id,
            SUBSCRIBER.c.status,
            SUBSCRIBER.c.suppression_cause,
            SUBSCRIBER.c.suppression_update_id,
            SUBSCRIBER.c.unsubscribed_at,
        )
        .where(selection.where())
        .order_by(SUBSCRIBER.c.unsubscribed_at.desc(), SUBSCRIBER.c.id)
        .limit(LIST_LIMIT)
    ).all()
    found = [
        {
            "subscriber_id": r.id,
            "status": r.status,
            "cause": r.suppression_cause,
            "update_id": r.suppression_update_id,
            "at": r.unsubscribed_at.isoformat() if r.unsubscribed_at else None,
            "reinstatable": r.suppression_cause in REINSTATABLE
            and r.status == SubscriberStatus.BOUNCED.value,
        }
        for r in rows
    ]
    return {
        "count": len(found),
        "reinstatable": sum(1 for f in found if f["reinstatable"]),
        "suppressions": found,
    }


def reinstate(session: Session, staff_id: int | None, selection: Selection, reason: str) -> int:
    """Make the selected bounced (or relay-refused) subscribers active again; unsubscribes and
    complaints are never touched. Audited with the count. The caller commits."""
    if not reason.strip():
        raise Invalid({"reason": "Say why (it goes in the audit log)."})
    now = utcnow()
    reinstated = transition(
        session,
        SUBSCRIBER,
        SubscriberTransitions.REINSTATE,
        sa.and_(
            selection.where(),
            SUBSCRIBER.c.suppression_cause.in_([c.value for c in REINSTATABLE]),
        ),
        {
            "unsubscribed_at": None,
            "updated_at": now,
            "suppression_cause": None,
            "suppression_update_id": None,
        },
    )
    audit(
        session,
        staff_id,
        AuditAction.REINSTATED,
        selection.update_id,
        detail(f"{reinstated} reinstated", selection, reason),
    )
    log.info("%s suppressed subscribers reinstated", reinstated)
    return reinstated


def detail(what: str, selection: Selection, reason: str) -> str:
    window = ""
    if selection.since and selection.until:
        window = f" {selection.since.isoformat()}..{selection.until.isoformat()}"
    cause = f" cause {selection.cause.value}" if selection.cause else ""
    return f"{what}{cause}{window}: {reason}"[:500]

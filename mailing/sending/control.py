"""Staff control over a send: start (the one path the CLI, the API and the console share),
schedule and unschedule, pause, resume, cancel.

Every status change is a named transition (mailing/states.py) applied as one conditional UPDATE,
so two staff pressing buttons at once cannot both win. The database is the truth: once a send is
committed it is accepted, whether or not the broker took the news; if it did not, the
reconciler starts the work within a minute.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlmodel import Session, col, select

import mailing.sending.population as population
from mailing.config import get_settings
from mailing.errors import Conflict, Invalid
from mailing.models import AuditLog, Update, table_of, utcnow
from mailing.sending.batch import finish_if_done
from mailing.sending.recipients import DELIVERY
from mailing.staff import review
from mailing.staff.audit import AuditAction, audit
from mailing.states import (
    DeliveryTransitions,
    Transition,
    UpdateStatus,
    UpdateTransitions,
    transition,
)
from mailing.updates import drafts

log = logging.getLogger(__name__)

UPDATE = table_of(Update)
# (update_id, how many batch tasks, countdown seconds): hands work to the broker.
Publish = Callable[[int, int, float], None]
MAX_SCHEDULE_AHEAD = timedelta(days=365)


class WrongState(Conflict):
    """The update is not in a status this action can start from."""

    def __init__(self, update: Update, action: str) -> None:
        super().__init__(f"This update is {update.status.value}: it cannot be {action}.")
        self.status = update.status


class ContentChanged(Conflict):
    """The update changed after the sender reviewed it: nothing was sent."""

    def __init__(self) -> None:
        super().__init__(
            "This update was changed after you reviewed it. Nothing was sent: "
            "review it again and confirm the new version."
        )


@dataclass(frozen=True)
class Started:
    started: bool  # False: it was not a draft (already sending or sent); nothing more happens
    recipients: int


@dataclass(frozen=True)
class SendRequest:
    started: bool
    recipients: int
    published: bool  # False: the broker did not answer; the reconciler starts it within a minute


def batch_tasks(recipients: int) -> int:
    """How many batch tasks carry a send: each pulls chunks until the work runs out."""
    settings = get_settings()
    return max(1, min(settings.send_parallelism, math.ceil(recipients / settings.send_batch_size)))


def _pinned(update: Update, expected: str | None) -> None:
    if expected is not None and expected != drafts.fingerprint(update):
        raise ContentChanged()


def start_send(
    session: Session,
    update_id: int,
    staff_id: int | None,
    *,
    fingerprint: str | None = None,
    due: bool = False,
) -> Started:
    """Turn a draft (or, with `due`, a scheduled update whose time has come) into `sending` and
    write the first page of its deliveries, in the caller's transaction; the workers write the
    rest while they send (mailing/sending/population.py), so this takes the same time for any
    size of list. `recipients` is exact once every row is written.

    The one rule for "send now", whoever asks (console, API, CLI): only a draft starts; a
    scheduled update is WrongState (409) until it is unscheduled; anything already sending or
    sent is not started again (Started(False)). Raises UpdateNotFound, ContentChanged, WrongState.
    """
    update = drafts.get(session, update_id, lock=True)
    start = UpdateTransitions.START_DUE if due else UpdateTransitions.START
    if not start.allows(update.status):
        if not due and update.status == UpdateStatus.SCHEDULED:
            raise WrongState(update, "sent now; unschedule it first to send it at once")
        return Started(False, update.recipients)  # already sending or sent: nothing more
    _pinned(update, fingerprint)
    now = utcnow()
    won = transition(
        session,
        UPDATE,
        start,
        UPDATE.c.id == update_id,
        {"send_started_at": now, "heartbeat_at": now, "send_at": None},
    )
    if not won:
        return Started(False, update.recipients)
    # The first page of delivery rows now; the workers write the rest while they send.
    recipients = population.begin(session, update_id, drafts.themes_of(update), now)
    audit(session, staff_id, AuditAction.SENT, update_id, f"{recipients} recipients")
    session.expire(update)
    log.info("update %s: sending to %s recipients", update_id, recipients)
    if recipients == 0:
        finish_if_done(session, update_id)
    return Started(True, recipients)


def publish_safely(publish: Publish, update_id: int, tasks: int, countdown: float = 0) -> bool:
    """Hand work to the broker; False (logged) if it is down: the database already holds it."""
    try:
        publish(update_id, tasks, countdown)
    except Exception as exc:  # any broker failure: the reconciler re-drives from the database
        log.warning("update %s: broker unavailable (%s); reconcile will start it", update_id, exc)
        return False
    return True


def request_send(
    session: Session,
    update_id: int,
    staff_id: int | None,
    publish: Publish,
    *,
    fingerprint: str | None = None,
    due: bool = False,
) -> SendRequest:
    """Start a send and commit it, then tell the workers. The one way to send an update."""
    started = start_send(session, update_id, staff_id, fingerprint=fingerprint, due=due)
    session.commit()
    published = True
    if started.started and started.recipients:
        published = publish_safely(publish, update_id, batch_tasks(started.recipients))
    return SendRequest(started.started, started.recipients, published)


def _change(
    session: Session,
    update: Update,
    t: Transition[UpdateStatus],
    action: str,
    values: dict[str, object] | None = None,
) -> None:
    assert update.id is not None
    if not transition(session, UPDATE, t, UPDATE.c.id == update.id, values):
        raise WrongState(update, action)
    session.expire(update)


def schedule(
    session: Session,
    update_id: int,
    staff_id: int | None,
    send_at: datetime,
    now: datetime,
    *,
    fingerprint: str | None = None,
) -> Update:
    """Schedule a draft for `send_at` (aware). Raises Invalid for a time in the past or more
    than a year ahead; WrongState unless it is a draft. The caller commits."""
    if send_at.tzinfo is None:
        raise Invalid({"send_at": "Give the time with its UTC offset, e.g. 2026-12-01T09:00Z."})
    if send_at <= now:
        raise Invalid({"send_at": "That time has passed: choose a time in the future."})
    if send_at > now + MAX_SCHEDULE_AHEAD:
        raise Invalid({"send_at": "A send can be scheduled at most a year ahead."})
    update = drafts.get(session, update_id, lock=True)
    _pinned(update, fingerprint)
    _change(session, update, UpdateTransitions.SCHEDULE, "scheduled", {"send_at": send_at})
    audit(session, staff_id, AuditAction.SCHEDULED, update_id, f"for {send_at.isoformat()}")
    return update


def unschedule(session: Session, update_id: int, staff_id: int | None) -> Update:
    update = drafts.get(session, update_id, lock=True)
    _change(session, update, UpdateTransitions.UNSCHEDULE, "unscheduled", {"send_at": None})
    audit(session, staff_id, AuditAction.UNSCHEDULED, update_id)
    return update


def pause(session: Session, update_id: int, staff_id: int | None) -> Update:
    """Stop a send at the next chunk of every worker; nothing is lost or sent twice."""
    update = drafts.get(session, update_id)
    _change(session, update, UpdateTransitions.PAUSE, "paused")
    audit(session, staff_id, AuditAction.PAUSED, update_id)
    return update


def resume(session: Session, update_id: int, staff_id: int | None, publish: Publish) -> Update:
    """Carry on a paused send with what is still pending; commits, then tells the workers."""
    update = drafts.get(session, update_id)
    _change(session, update, UpdateTransitions.RESUME, "resumed", {"heartbeat_at": utcnow()})
    audit(session, staff_id, AuditAction.RESUMED, update_id)
    session.commit()
    publish_safely(publish, update_id, batch_tasks(update.recipients))
    return update


def cancel(session: Session, update_id: int, staff_id: int | None) -> Update:
    """Cancel a scheduled, sending or paused update; commits. Every delivery not yet sent is
    cancelled.

    Two transactions, in the order the workers take their locks: the status first (each worker
    stops at its next chunk), then the pending deliveries, which waits for any chunk being sent
    right now (its rows are locked until it is settled). Taking both in one transaction would
    lock the update row before the deliveries, the opposite of a worker, and deadlock. If the
    second step is lost, the reconciler's `cancel_leftovers` finishes it.
    """
    update = drafts.get(session, update_id)
    _change(session, update, UpdateTransitions.CANCEL, "cancelled", {"send_at": None})
    population.close(session, update_id)  # rows not yet written never will be
    audit(session, staff_id, AuditAction.CANCELLED, update_id)
    session.commit()
    cancel_pending(session, update_id)
    session.commit()
    return update


def cancel_pending(session: Session, update_id: int) -> int:
    """Cancel the pending deliveries of an update that is no longer sending."""
    return transition(
        session, DELIVERY, DeliveryTransitions.CANCEL, DELIVERY.c.update_id == update_id
    )


def start_due(session: Session, now: datetime, publish: Publish) -> int:
    """Start every scheduled update whose time has come (beat's reconciler calls this)."""
    due = session.execute(
        UPDATE.select()
        .with_only_columns(UPDATE.c.id)
        .where(
            UPDATE.c.status == UpdateStatus.SCHEDULED.value,
            UPDATE.c.send_at <= now,
        )
        .order_by(UPDATE.c.send_at)
    ).scalars()
    started = 0
    for update_id in list(due):
        request = request_send(session, int(update_id), None, publish, due=True)
        if request.started:
            # "It has gone" to its author unless they scheduled it themselves, in this
            # transaction: the reconciler's notice re-drive hands it to a worker within
            # MAILING_NOTICE_REDRIVE_SECONDS.
            update = session.get(Update, int(update_id))
            if update is not None:
                review.tell_author(session, update, _scheduled_by(session, int(update_id)))
        started += int(request.started)
    return started


def _scheduled_by(session: Session, update_id: int) -> int | None:
    """Who last scheduled the update (from the audit log)."""
    return session.exec(
        select(AuditLog.staff_id)
        .where(AuditLog.update_id == update_id, AuditLog.action == AuditAction.SCHEDULED)
        .order_by(col(AuditLog.id).desc())
    ).first()


def _overdue_before(now: datetime) -> datetime:
    # The reconciler, which starts a scheduled update, runs every reconcile interval: two
    # missed rounds and a minute mean no `mailing beat` (or `mailing dev`) is running.
    return now - timedelta(seconds=2 * get_settings().reconcile_interval_seconds + 60)


def overdue(update: Update, now: datetime) -> bool:
    """A scheduled update whose time passed and that has still not started."""
    if update.status != UpdateStatus.SCHEDULED or update.send_at is None:
        return False
    send_at = update.send_at if update.send_at.tzinfo else update.send_at.replace(tzinfo=UTC)
    return send_at < _overdue_before(now)


def overdue_updates(session: Session, now: datetime) -> list[Update]:
    """Every overdue scheduled update, oldest first (the dashboard flags them)."""
    return list(
        session.exec(
            select(Update)
            .where(col(Update.status) == UpdateStatus.SCHEDULED)
            .where(col(Update.send_at) < _overdue_before(now))
            .order_by(col(Update.send_at))
        )
    )

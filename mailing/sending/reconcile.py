"""The reconciler: one job, run by beat every MAILING_RECONCILE_INTERVAL_SECONDS, made of small
named checks that each find work the broker lost or never had, and re-drive it.

- `control.start_due`: scheduled updates whose time has come start (recipients decided now).
- `finish_done_sends`: a send with nothing pending is marked sent.
- `cancel_leftovers`: a cancelled (or abandoned) update with deliveries still pending has them
  cancelled (the second step of a cancel, if it was lost).
- `redrive_quiet_sends`: when no send anywhere has settled a chunk for MAILING_SEND_STALL_SECONDS,
  every send with ready pending deliveries (or delivery rows still to write) gets fresh batch
  tasks (at most once per stall period). While any worker makes progress, queued tasks are
  only waiting their turn (the queue is first in, first out), so a long queue is never
  mistaken for lost work.
- `outbox.redrive`: a notice still in the outbox MAILING_NOTICE_REDRIVE_SECONDS after it was
  queued is queued again (its task was lost; a duplicate finds it sent or locked).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session

import mailing.sending.population as population
from mailing.config import get_settings
from mailing.mail import outbox
from mailing.sending.batch import UPDATE, finish_if_done
from mailing.sending.control import (
    Publish,
    batch_tasks,
    cancel_pending,
    publish_safely,
    start_due,
)
from mailing.sending.recipients import DELIVERY
from mailing.states import DeliveryStatus, UpdateStatus

log = logging.getLogger(__name__)


@dataclass
class Reconciled:
    started: int = 0
    finished: int = 0
    redriven: int = 0  # batch tasks published
    notices: int = 0  # notice tasks published


def reconcile(
    session: Session, now: datetime, publish: Publish, publish_notice: Callable[[int], None]
) -> Reconciled:
    """Run every check; safe at any time and from any number of processes."""
    result = Reconciled()
    result.started = start_due(session, now, publish)
    result.finished = finish_done_sends(session)
    cancel_leftovers(session)
    result.redriven = redrive_quiet_sends(session, now, publish)
    result.notices = outbox.redrive(session, now, publish_notice)
    if result.started or result.redriven or result.notices:
        log.info(
            "reconcile: %s started, %s finished, %s batch tasks and %s notices re-driven",
            result.started,
            result.finished,
            result.redriven,
            result.notices,
        )
    return result


def _sending_ids(session: Session) -> list[int]:
    query = sa.select(UPDATE.c.id).where(UPDATE.c.status == UpdateStatus.SENDING.value)
    return [int(i) for i in session.execute(query.order_by(UPDATE.c.id)).scalars()]


def finish_done_sends(session: Session) -> int:
    finished = 0
    for update_id in _sending_ids(session):
        finished += int(finish_if_done(session, update_id))
        session.commit()
    return finished


def cancel_leftovers(session: Session) -> int:
    pending = (
        sa.select(sa.literal(1))
        .where(
            DELIVERY.c.update_id == UPDATE.c.id,
            DELIVERY.c.status == DeliveryStatus.PENDING.value,
        )
        .exists()
    )
    stopped = session.execute(
        sa.select(UPDATE.c.id).where(UPDATE.c.status == UpdateStatus.CANCELLED.value, pending)
    ).scalars()
    cancelled = 0
    for update_id in list(stopped):
        cancelled += cancel_pending(session, int(update_id))
        session.commit()
    return cancelled


def redrive_quiet_sends(session: Session, now: datetime, publish: Publish) -> int:
    quiet_since = now - timedelta(seconds=get_settings().send_stall_seconds)
    latest = session.execute(
        sa.select(sa.func.max(UPDATE.c.heartbeat_at)).where(
            UPDATE.c.status == UpdateStatus.SENDING.value
        )
    ).scalar()
    if latest is not None and latest >= quiet_since:
        return 0  # a worker is making progress: queued batches are waiting their turn
    tasks = 0
    for update_id in _sending_ids(session):
        ready = session.execute(
            sa.select(sa.func.count()).where(
                DELIVERY.c.update_id == update_id,
                DELIVERY.c.status == DeliveryStatus.PENDING.value,
                sa.or_(DELIVERY.c.retry_at.is_(None), DELIVERY.c.retry_at <= now),
            )
        ).scalar_one()
        if not ready and not population.is_open(session, update_id):
            continue
        claimed = session.execute(
            UPDATE.update()
            .where(
                UPDATE.c.id == update_id,
                sa.or_(UPDATE.c.redriven_at.is_(None), UPDATE.c.redriven_at < quiet_since),
            )
            .values(redriven_at=now)
        )
        session.commit()
        if not getattr(claimed, "rowcount", 0):
            continue  # re-driven less than a stall period ago: those tasks are on their way
        count = batch_tasks(max(int(ready), 1))
        if publish_safely(publish, update_id, count):
            tasks += count
    return tasks

"""Celery tasks: each one unit of work, arguments are ids, the rules live in mailing/."""

from __future__ import annotations

import logging

from celery import Task

from mailing.mail.relay import TransientFailure
from workers.celery_app import app

log = logging.getLogger(__name__)

# The jobs beat (or `mailing dev`) runs every few seconds; each logs its own line when it did
# something, so Celery's "received" and "succeeded" INFO lines for them are only noise.
PERIODIC = frozenset(
    f"workers.tasks.{name}"
    for name in ("reconcile", "weekly_digests", "purge", "snapshot_figures", "consent_refresh")
)


class QuietPeriodicJobs(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        name = args.get("name") if isinstance(args, dict) else None
        return record.levelno > logging.INFO or name not in PERIODIC


for _logger in ("celery.app.trace", "celery.worker.strategy"):
    logging.getLogger(_logger).addFilter(QuietPeriodicJobs())


@app.task(
    bind=True,
    autoretry_for=(TransientFailure,),
    retry_backoff=5,
    retry_backoff_max=600,
    retry_jitter=True,
    max_retries=12,
)
def send_notice(self: Task, notice_id: int) -> bool:
    """One email from the notice outbox (a confirmation, an erase link...); if this task is
    lost, the reconciler publishes it again."""
    from mailing.mail import notices

    return notices.send(notice_id)


@app.task
def send_notices(notice_ids: list[int]) -> None:
    """Several notices gathered by the web's publisher, sent in turn. One that the relay defers
    goes on as its own `send_notice` task, with that task's retries; one that fails otherwise
    stays in the outbox for the reconciler."""
    from mailing.mail import notices
    from workers.enqueue import publish_notice

    for notice_id in notice_ids:
        try:
            notices.send(int(notice_id))
        except TransientFailure:
            publish_notice(notice_id, countdown=5)
        except Exception as exc:  # the name only: an exception's text may quote an address
            log.warning(
                "notice %s could not be sent (%s); the reconciler will try again",
                notice_id,
                type(exc).__name__,
            )


@app.task
def purge() -> None:
    """Storage limitation, hourly from beat: expired sign-ups and lapsed unsubscribes go."""
    from mailing.db import session_scope
    from mailing.models import utcnow
    from mailing.subscribers.erasure import purge as purge_expired

    with session_scope() as session:
        purge_expired(session, utcnow())


@app.task
def snapshot_figures() -> None:
    """Today's subscriber counts per theme for the staff chart; hourly, idempotent per day."""
    from mailing.db import session_scope
    from mailing.figures.subscribers import record_snapshot

    with session_scope() as session:
        record_snapshot(session)


@app.task
def send_update_batch(update_id: int) -> None:
    """Send an update's pending deliveries for up to MAILING_SEND_TASK_SECONDS, then hand the
    rest to a fresh task (so no task holds a worker for long); deferred mail is picked up again
    when it is due. A lost task is re-driven by the reconciler."""
    from mailing.sending import deliver_batch
    from workers.enqueue import publish_update_batches

    outcome = deliver_batch(update_id)
    log.info(
        "update %s batch: %s sent, %s failed, %s cancelled%s%s",
        update_id,
        outcome.sent,
        outcome.failed,
        outcome.cancelled,
        " (relay unreachable)" if outcome.deferred else "",
        " (stopped)" if outcome.stopped else "",
    )
    if outcome.more:
        publish_update_batches(update_id, 1)
    elif outcome.retry_in is not None:
        publish_update_batches(update_id, 1, countdown=outcome.retry_in)


@app.task
def reconcile() -> None:
    """Every MAILING_RECONCILE_INTERVAL_SECONDS from beat: start due scheduled sends, finish
    done ones, re-drive sends and notices whose tasks were lost."""
    from mailing.db import session_scope
    from mailing.models import utcnow
    from mailing.sending import reconcile as reconcile_all
    from workers.enqueue import publish_notice, publish_update_batches

    with session_scope() as session:
        reconcile_all(session, utcnow(), publish_update_batches, publish_notice)


# --- Weekly summaries (sending/digests.py, sending/summaries.py) ------------------------


@app.task
def weekly_digests() -> int:
    """Every reconcile interval from beat: plan Saturday's summaries once they are due (08:30
    London time), and re-drive any whose task was lost."""
    from mailing.db import session_scope
    from mailing.models import utcnow
    from mailing.sending.summaries import run
    from workers.enqueue import enqueue_digest_batch

    with session_scope() as session:
        return run(session, utcnow(), enqueue_digest_batch)


@app.task
def send_digest_batch(first_id: int, last_id: int) -> None:
    """Send one range of weekly summaries; those waiting for a retry (the relay deferred them or
    was down) are sent by this task published again for when the first is due; a lost task is
    re-driven by beat's weekly_digests."""
    from mailing.sending.summaries import deliver_batch
    from workers.enqueue import enqueue_digest_batch

    outcome = deliver_batch(first_id, last_id)
    log.info(
        "weekly summaries %s-%s: %s sent, %s failed, %s cancelled%s",
        first_id,
        last_id,
        outcome.sent,
        outcome.failed,
        outcome.cancelled,
        " (deferred)" if outcome.deferred else "",
    )
    if outcome.retry_in is not None:
        enqueue_digest_batch(first_id, last_id, countdown=outcome.retry_in)


@app.task
def consent_refresh() -> None:
    """Hourly from beat (does nothing unless MAILING_CONSENT_REFRESH_YEARS is set): ask those
    whose consent is that old to renew it, and let lapse those who did not within 30 days."""
    from mailing.db import session_scope
    from mailing.models import utcnow
    from mailing.subscribers import refresh
    from workers.enqueue import publish_notices

    with session_scope() as session:
        refresh.run(session, utcnow(), lambda ids: publish_notices(ids, queue="updates"))

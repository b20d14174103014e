"""Celery tasks: each one unit of work, arguments are ids and slugs, the rules live in mailing/."""

from __future__ import annotations

import logging

from celery import Task

from mailing.db import session_scope
from mailing.mailer import TransientFailure
from mailing.states import Frequency
from mailing.subscriptions import EmailToSend, Notice, send_notice
from workers.celery_app import app

log = logging.getLogger(__name__)


@app.task(
    bind=True,
    autoretry_for=(TransientFailure,),
    retry_backoff=5,
    retry_backoff_max=600,
    retry_jitter=True,
    max_retries=12,
)
def send_notice_email(
    self: Task,
    notice: str,
    subscriber_id: int,
    themes: list[str],
    frequency: str = Frequency.IMMEDIATE.value,  # absent from tasks queued before frequencies
) -> bool:
    with session_scope() as session:
        sent = send_notice(
            session, EmailToSend(Notice(notice), subscriber_id, themes, Frequency(frequency))
        )
    log.info(
        "notice %s for subscriber %s: %s", notice, subscriber_id, "sent" if sent else "skipped"
    )
    return sent


@app.task(
    bind=True,
    autoretry_for=(TransientFailure,),
    retry_backoff=5,
    retry_backoff_max=600,
    retry_jitter=True,
    max_retries=12,
)
def send_erase_link_email(self: Task, subscriber_id: int) -> bool:
    from mailing.selfservice import send_erase_link

    # An erasure or purge may have run since this was queued: then there is no one to mail.
    with session_scope() as session:
        sent = send_erase_link(session, subscriber_id)
    log.info("erase link for subscriber %s: %s", subscriber_id, "sent" if sent else "skipped")
    return sent


@app.task
def purge() -> None:
    """Storage limitation, hourly from beat: expired sign-ups and lapsed unsubscribes go."""
    from mailing.models import utcnow
    from mailing.selfservice import purge as purge_expired

    with session_scope() as session:
        purge_expired(session, utcnow())


@app.task
def snapshot_figures() -> None:
    """Today's subscriber counts per theme for the staff chart; hourly, idempotent per day."""
    from mailing.figures import record_snapshot

    with session_scope() as session:
        record_snapshot(session)


@app.task(bind=True, max_retries=None)
def start_update_send(self: Task, update_id: int) -> int:
    """Enqueue the batches of an update that start_send turned to `sending`."""
    from mailing.sending import dispatch
    from workers.enqueue import enqueue_update_batch

    with session_scope() as session:
        return dispatch(session, update_id, enqueue_update_batch)


@app.task
def send_update_batch(update_id: int, first_id: int, last_id: int, retries: int = 0) -> None:
    """Send one range of an update's deliveries; a 4xx or lost relay retries with backoff.

    The retry is a fresh message with a countdown (Celery's own retry does not survive the
    in-process broker of `mailing dev`); if even that is lost, reconcile re-drives the range.
    """
    from mailing.config import get_settings
    from mailing.sending import backoff_seconds, deliver_batch

    outcome = deliver_batch(update_id, first_id, last_id)
    log.info(
        "update %s batch %s-%s: %s sent, %s failed, %s cancelled%s",
        update_id,
        first_id,
        last_id,
        outcome.sent,
        outcome.failed,
        outcome.cancelled,
        " (deferred)" if outcome.deferred else "",
    )
    if outcome.deferred:
        if retries >= get_settings().send_max_retries:
            log.warning(
                "update %s batch %s-%s: retries used up; reconcile will resume it",
                update_id,
                first_id,
                last_id,
            )
            return
        send_update_batch.apply_async(
            args=(update_id, first_id, last_id, retries + 1),
            queue="updates",
            countdown=backoff_seconds(retries),
        )


@app.task
def reconcile() -> int:
    """Every minute from beat: re-drive update sends whose tasks were lost; finish done ones."""
    from mailing.models import utcnow
    from mailing.sending import reconcile as reconcile_sends
    from workers.enqueue import enqueue_update_batch

    with session_scope() as session:
        return reconcile_sends(session, utcnow(), enqueue_update_batch)


# --- Weekly summaries (mailing/digests.py, mailing/digest_sending.py) ---------------------------


@app.task
def weekly_digests() -> int:
    """Every reconcile interval from beat: plan Saturday's summaries once they are due (08:30
    London time), and re-drive any whose task was lost."""
    from mailing.digest_sending import run
    from mailing.models import utcnow
    from workers.enqueue import enqueue_digest_batch

    with session_scope() as session:
        return run(session, utcnow(), enqueue_digest_batch)


@app.task
def send_digest_batch(first_id: int, last_id: int) -> None:
    """Send one range of weekly summaries; what is left pending, beat's weekly_digests resends."""
    from mailing.digest_sending import deliver_batch

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

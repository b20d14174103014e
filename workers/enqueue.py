"""Handing work to the broker, by task name: the web layer, the CLI and the tasks publish through
here, and this module imports no task (so nothing imports back)."""

from __future__ import annotations

from workers.celery_app import app

# Fail fast when the broker is down rather than hold a request for minutes.
PUBLISH_RETRY = {"max_retries": 3, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}

SEND_NOTICE = "workers.tasks.send_notice"
SEND_UPDATE_BATCH = "workers.tasks.send_update_batch"


def publish_notice(notice_id: int) -> None:
    """A notice row was committed: a worker sends it."""
    app.send_task(SEND_NOTICE, args=(notice_id,), queue="transactional", retry_policy=PUBLISH_RETRY)


def publish_update_batches(update_id: int, tasks: int, countdown: float = 0) -> None:
    """`tasks` batch tasks for an update (each pulls chunks until the work runs out)."""
    for _ in range(tasks):
        app.send_task(
            SEND_UPDATE_BATCH,
            args=(update_id,),
            queue="updates",
            countdown=countdown or None,
            retry_policy=PUBLISH_RETRY,
        )


def enqueue_digest_batch(first_id: int, last_id: int) -> None:
    """A range of this week's summaries to send."""
    app.send_task(
        "workers.tasks.send_digest_batch",
        args=(first_id, last_id),
        queue="updates",
        retry_policy=PUBLISH_RETRY,
    )

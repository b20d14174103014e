"""Every Celery task and queue name, spelt once: the app's routes, the publishers, the CLI's
worker command and the tests all take them from here."""

from __future__ import annotations

from enum import StrEnum


class Queue(StrEnum):
    TRANSACTIONAL = "transactional"  # confirmations, welcomes, emailed links: never waits
    UPDATES = "updates"  # update sends and weekly summaries
    HOUSEKEEPING = "housekeeping"  # beat's reconcile, purge, snapshot, weekly planning


class Task(StrEnum):
    SEND_NOTICE = "workers.tasks.send_notice"
    SEND_NOTICES = "workers.tasks.send_notices"
    SEND_UPDATE_BATCH = "workers.tasks.send_update_batch"
    SEND_DIGEST_BATCH = "workers.tasks.send_digest_batch"
    RECONCILE = "workers.tasks.reconcile"
    PURGE = "workers.tasks.purge"
    SNAPSHOT_FIGURES = "workers.tasks.snapshot_figures"
    WEEKLY_DIGESTS = "workers.tasks.weekly_digests"
    CONSENT_REFRESH = "workers.tasks.consent_refresh"


# Which queue each task runs on.
ROUTES: dict[Task, Queue] = {
    Task.SEND_NOTICE: Queue.TRANSACTIONAL,
    Task.SEND_NOTICES: Queue.TRANSACTIONAL,
    Task.SEND_UPDATE_BATCH: Queue.UPDATES,
    Task.SEND_DIGEST_BATCH: Queue.UPDATES,
    Task.RECONCILE: Queue.HOUSEKEEPING,
    Task.PURGE: Queue.HOUSEKEEPING,
    Task.SNAPSHOT_FIGURES: Queue.HOUSEKEEPING,
    Task.WEEKLY_DIGESTS: Queue.HOUSEKEEPING,
    Task.CONSENT_REFRESH: Queue.HOUSEKEEPING,
}

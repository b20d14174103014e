"""The Celery app, configured from the settings. Tasks carry ids, never addresses."""

from __future__ import annotations

from celery import Celery
from celery.signals import worker_process_init

from mailing.config import ConfigError, Settings, get_settings

QUEUES = ("transactional", "updates", "housekeeping")

app = Celery("mailing", include=["workers.tasks"])


def broker_url(settings: Settings, *, embedded: bool = False) -> str:
    if settings.broker_url:
        return settings.broker_url
    if embedded:
        return "memory://localhost/"
    raise ConfigError(
        "MAILING_BROKER_URL is not set: give a redis:// URL (only `mailing dev` runs without one)."
    )


def configure(settings: Settings | None = None, *, embedded: bool = False) -> Celery:
    settings = settings or get_settings()
    from mailing.metrics import observe_tasks

    observe_tasks()  # the task-latency histogram, in whichever process runs tasks
    app.conf.update(
        broker_url=broker_url(settings, embedded=embedded),
        result_backend=None,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        # The database is the source of truth; a task lost with its worker is delivered again.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue="transactional",
        task_routes={
            "workers.tasks.send_notice": {"queue": "transactional"},
            "workers.tasks.send_notices": {"queue": "transactional"},
            "workers.tasks.send_update_batch": {"queue": "updates"},
            "workers.tasks.reconcile": {"queue": "housekeeping"},
            "workers.tasks.purge": {"queue": "housekeeping"},
            "workers.tasks.snapshot_figures": {"queue": "housekeeping"},
            "workers.tasks.weekly_digests": {"queue": "housekeeping"},
            "workers.tasks.send_digest_batch": {"queue": "updates"},
            "workers.tasks.consent_refresh": {"queue": "housekeeping"},
        },
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": 3600, "polling_interval": 0.05}
        if embedded and not settings.broker_url
        else {"visibility_timeout": 3600},
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        timezone="UTC",
        beat_schedule={
            "reconcile-sends": {
                "task": "workers.tasks.reconcile",
                "schedule": settings.reconcile_interval_seconds,
            },
            "purge-expired-data": {
                "task": "workers.tasks.purge",
                "schedule": settings.housekeeping_interval_seconds,
            },
            "snapshot-figures": {
                "task": "workers.tasks.snapshot_figures",
                "schedule": settings.housekeeping_interval_seconds,
            },
            "consent-refresh": {
                "task": "workers.tasks.consent_refresh",
                "schedule": settings.housekeeping_interval_seconds,
            },
            # Not a crontab: the task itself knows when Saturday 08:30 London time has come (in
            # any season), and running often lets it re-drive lost work and catch up after an
            # outage of beat.
            "weekly-digests": {
                "task": "workers.tasks.weekly_digests",
                "schedule": settings.reconcile_interval_seconds,
            },
        },
    )
    return app


@worker_process_init.connect(weak=False)
def _own_database_connections(**_: object) -> None:
    """A prefork child must not use the connections it inherited from the worker's parent (which
    opens one when mailing.metrics registers its collector): two processes on one socket corrupt
    each other's transactions. Drop them unclosed (closing would end the parent's session too)."""
    from mailing.db import get_engine

    if get_engine.cache_info().currsize:
        get_engine().dispose(close=False)


def try_configure() -> None:
    # Importing must not fail where no broker is configured (e.g. `mailing migrate`).
    try:
        configure()
    except ConfigError:
        pass


try_configure()

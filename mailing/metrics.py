"""Prometheus metrics. Counters count this process's events; the database figures (subscribers,
deliveries and updates by status, the send rate, delivery latency) are read at scrape time, so
they are right however many API and worker processes run.

No series moves differently for a sign-up of a new address than for a known one: pending
subscribers (the one count a sign-up of a new address changes) are not exposed, so a scrape
can never tell whether someone is new. Staff see them in the console's figures.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)

SIGNUPS = Counter(
    "mailing_signups_total", "Sign-up requests by outcome", ["outcome"], registry=REGISTRY
)
CONFIRMATIONS = Counter("mailing_confirmations_total", "Subscriptions confirmed", registry=REGISTRY)
UNSUBSCRIBES = Counter("mailing_unsubscribes_total", "Unsubscribes", registry=REGISTRY)
ERASURES = Counter("mailing_erasures_total", "Erasures carried out", registry=REGISTRY)
RATE_LIMITED = Counter(
    "mailing_rate_limited_total", "Requests refused by the per-IP rate limit", registry=REGISTRY
)
REQUEST_LATENCY = Histogram(
    "mailing_request_seconds", "Request latency", ["route"], registry=REGISTRY
)

TASK_LATENCY = Histogram(
    "mailing_task_seconds",
    "Run time of Celery tasks in this process, by task name",
    ["task"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
    registry=REGISTRY,
)

# Deliverability (issue 13): counted where the bounce or report is taken in (`mailing inbound`
# or the SES webhook).
BOUNCES = Counter(
    "mailing_bounces_total", "Bounces taken in, by kind (hard, soft)", ["kind"], registry=REGISTRY
)
COMPLAINTS = Counter("mailing_complaints_total", "Spam complaints taken in", registry=REGISTRY)
INBOUND_MESSAGES = Counter(
    "mailing_inbound_messages_total",
    "Messages offered to `mailing inbound` and the SES webhook, by outcome",
    ["outcome"],
    registry=REGISTRY,
)

RATE_WINDOW = timedelta(minutes=1)
_task_started: dict[str, float] = {}


def _task_prerun(task_id: str | None = None, **_: object) -> None:
    if task_id:
        _task_started[task_id] = time.perf_counter()


def _task_postrun(task_id: str | None = None, task: object = None, **_: object) -> None:
    started = _task_started.pop(task_id or "", None)
    if started is not None:
        name = str(getattr(task, "name", "unknown"))
        TASK_LATENCY.labels(name).observe(time.perf_counter() - started)


def observe_tasks() -> None:
    """Time every Celery task run in this process (workers call this once at start)."""
    from celery.signals import task_postrun, task_prerun

    task_prerun.connect(_task_prerun, weak=False, dispatch_uid="mailing-task-latency-pre")
    task_postrun.connect(_task_postrun, weak=False, dispatch_uid="mailing-task-latency-post")


class DatabaseFigures(Collector):
    """Counts by status straight from the database, the source of truth."""

    def describe(self) -> Iterator[Metric]:
        # Registering must not query the database: a worker's parent would otherwise open a
        # connection that its forked children inherit.
        return iter(())

    def collect(self) -> Iterator[Metric]:
        from sqlmodel import col

        from mailing.db import get_engine
        from mailing.figures import kept_counts
        from mailing.models import Delivery, Update, table_of, utcnow
        from mailing.states import IN_FLIGHT_UPDATE, DeliveryStatus, SubscriberStatus

        UPDATE = table_of(Update)

        subscribers = GaugeMetricFamily(
            "mailing_subscribers", "Subscribers by status", labels=["status"]
        )
        deliveries = GaugeMetricFamily(
            "mailing_deliveries", "Update deliveries by status", labels=["status"]
        )
        updates = GaugeMetricFamily("mailing_updates", "Updates by status", labels=["status"])
        rate = GaugeMetricFamily(
            "mailing_send_rate", "Update emails sent a second over the last minute"
        )
        latency = GaugeMetricFamily(
            "mailing_delivery_latency_seconds",
            "Mean time from a delivery being queued to its email being sent, last minute",
        )
        up = GaugeMetricFamily("mailing_database_up", "1 if the database answered this scrape")
        since = utcnow() - RATE_WINDOW
        try:
            with get_engine().connect() as conn:
                # Kept counts (figures/kept_counts.py): a scrape never counts the big tables.
                for family, counts in (
                    (subscribers, kept_counts.subscribers_by_status(conn)),
                    (deliveries, kept_counts.deliveries_by_status(conn)),
                    (updates, _updates_by_status(conn)),
                ):
                    if family is subscribers:
                        # Pending would move by one when a new address signs up: never shown.
                        # The others always are, so no series appears with one person either.
                        counts = {
                            s.value: counts.get(s.value, 0)
                            for s in SubscriberStatus
                            if s != SubscriberStatus.PENDING
                        }
                    for status, n in counts.items():
                        family.add_metric([status], float(n))
                # Only the sends in flight or finished within the window are read: the rows a
                # scrape looks at grow with the current send, not with the history.
                recent = (
                    sa.select(UPDATE.c.id)
                    .where(
                        sa.or_(
                            UPDATE.c.status.in_([s.value for s in IN_FLIGHT_UPDATE]),
                            UPDATE.c.sent_at >= since,
                        )
                    )
                    .scalar_subquery()
                )
                sent_recently = sa.and_(
                    col(Delivery.update_id).in_(recent),
                    col(Delivery.status) == DeliveryStatus.SENT,
                    col(Delivery.sent_at) >= since,
                )
                n_recent = conn.execute(
                    sa.select(sa.func.count()).select_from(Delivery).where(sent_recently)
                ).scalar_one()
                sample = conn.execute(
                    sa.select(Delivery.sent_at, Delivery.enqueued_at)  # type: ignore[call-overload]
                    .where(sent_recently)
                    .limit(1000)
                ).all()
            rate.add_metric([], n_recent / RATE_WINDOW.total_seconds())
            waits = [(s - q).total_seconds() for s, q in sample if s is not None and q is not None]
            latency.add_metric([], sum(waits) / len(waits) if waits else 0.0)
            up.add_metric([], 1.0)
        except sa.exc.SQLAlchemyError:
            up.add_metric([], 0.0)
            yield up
            return
        yield from (subscribers, deliveries, updates, rate, latency, up)


def _updates_by_status(conn: sa.Connection) -> dict[str, int]:
    """Updates by status: a few hundred rows in years (one per update)."""
    rows = conn.execute(sa.text("SELECT status, COUNT(*) FROM theme_update GROUP BY status"))
    return {str(status): int(n) for status, n in rows}


REGISTRY.register(DatabaseFigures())

"""Prometheus metrics. Counters count this process's events; the database figures (subscribers,
deliveries and updates by status, the send rate, delivery latency) are read at scrape time, so
they are right however many API and worker processes run."""

from __future__ import annotations

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

RATE_WINDOW = timedelta(minutes=1)


class DatabaseFigures(Collector):
    """Counts by status straight from the database, the source of truth."""

    def collect(self) -> Iterator[Metric]:
        from sqlmodel import col, select

        from mailing.db import get_engine
        from mailing.models import Delivery, utcnow
        from mailing.states import DeliveryStatus

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
                for table, family in (
                    ("subscriber", subscribers),
                    ("delivery", deliveries),
                    ("theme_update", updates),
                ):
                    rows = conn.execute(
                        sa.text(f"SELECT status, COUNT(*) FROM {table} GROUP BY status")  # noqa: S608
                    )
                    for status, n in rows:
                        family.add_metric([str(status)], float(n))
                sent_recently = select(Delivery).where(
                    Delivery.status == DeliveryStatus.SENT, col(Delivery.sent_at) >= since
                )
                n_recent = conn.execute(
                    sa.select(sa.func.count()).select_from(sent_recently.subquery())
                ).scalar_one()
                sample = conn.execute(
                    sa.select(Delivery.sent_at, Delivery.enqueued_at)  # type: ignore[call-overload]
                    .where(Delivery.status == DeliveryStatus.SENT, col(Delivery.sent_at) >= since)
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


REGISTRY.register(DatabaseFigures())

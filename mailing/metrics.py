"""Prometheus metrics: counters count events in this process; database figures read at scrape."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

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

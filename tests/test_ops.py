"""Operations endpoints: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.support.helpers import only_link, subscribe
from workers.names import Task


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_healthz_answers_while_the_process_is_up(client):
    answer = client.get("/healthz")
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok"}


def test_readyz_checks_database_and_broker(client):
    answer = client.get("/readyz")
    assert answer.status_code == 200
    assert answer.json() == {"status": "ready", "database": True, "broker": True}


def test_metrics_count_events_and_read_figures_from_the_database(client, smtp):
    before = _samples(client.get("/metrics").text)
    subscribe(client, "metrics@example.org")
    client.post(only_link(smtp.outbox.wait_for(1)[0], "confirm"))
    client.post("/subscriptions", json={"email": "bad", "consent": True})

    answer = client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    after = _samples(answer.text)

    def grew(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    assert grew("mailing_signups_total", outcome="accepted") == 1
    assert grew("mailing_signups_total", outcome="invalid") == 1
    assert grew("mailing_confirmations_total") == 1
    assert after[("mailing_subscribers", (("status", "active"),))] == 1
    assert after[("mailing_database_up", ())] == 1
    assert ("mailing_send_rate", ()) in after


def test_metrics_time_the_tasks_workers_run(client, smtp):
    from tests.conftest import drain_worker

    key = ("mailing_task_seconds_count", (("task", Task.SEND_NOTICES.value),))
    before = _samples(client.get("/metrics").text).get(key, 0)
    subscribe(client, "timed@example.org")
    smtp.outbox.wait_for(1)
    drain_worker()
    after = _samples(client.get("/metrics").text)
    assert after.get(key, 0) - before == 1


def test_metrics_name_every_figure_operators_watch(client):
    names = {f.name for f in text_string_to_metric_families(client.get("/metrics").text)}
    assert {
        "mailing_signups",
        "mailing_confirmations",
        "mailing_unsubscribes",
        "mailing_erasures",
        "mailing_rate_limited",
        "mailing_subscribers",
        "mailing_deliveries",
        "mailing_updates",
        "mailing_send_rate",
        "mailing_task_seconds",
        "mailing_delivery_latency_seconds",
    } <= names


def test_metrics_hold_no_personal_data(client, smtp):
    subscribe(client, "hidden.person@example.org")
    smtp.outbox.wait_for(1)
    text = client.get("/metrics").text
    assert "hidden" not in text and "example.org" not in text


def test_each_request_logs_one_json_event_with_route_template_and_request_id(client, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="mailing.access")
    answer = client.get("/confirm/some.secret-token")
    [record] = [r for r in caplog.records if r.name == "mailing.access"]
    assert record.route == "/confirm/{token}"
    assert record.status == 400
    assert "secret-token" not in record.getMessage()
    import json

    from mailing.logs import JsonFormatter

    event = json.loads(JsonFormatter().format(record))
    assert event["status"] == 400 and event["method"] == "GET"
    assert answer.headers["x-request-id"]


def test_the_log_filter_redacts_addresses_and_every_kind_of_token():
    from mailing.logs import redact
    from mailing.subscribers.tokens import Purpose, sign

    token = sign(Purpose.UNSUBSCRIBE, {"s": 1, "v": 0})
    line = redact(
        f"to Some.One+x@Example.org and some%40example.org; GET /erase/{token}; bare {token}; "
        "Authorization: Bearer s3cr3t-API_token; /admin/login?csrf_token=abc&password=hunter2"
    )
    for secret in ("Some.One", "some%40", token, "s3cr3t", "abc&", "hunter2"):
        assert secret not in line, line
    assert "<address>" in line and "/erase/<token>" in line and "Bearer <token>" in line

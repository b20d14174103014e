"""Operations endpoints: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import only_link, subscribe


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

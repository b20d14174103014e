"""What production does not serve: the API schema and its viewer; /metrics only with its token."""

from __future__ import annotations

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from mailing.states import SubscriberStatus
from mailing.web.app import create_app
from tests.conftest import drain_worker
from tests.support.helpers import subscribe
from tests.support.selfservice import active_subscriber


def test_production_serves_neither_the_openapi_schema_nor_the_docs(database, settings_env):
    settings_env(env="production")
    with TestClient(create_app()) as production:
        for path in ("/openapi.json", "/docs", "/redoc", "/docs/oauth2-redirect"):
            assert production.get(path).status_code == 404, path


def test_dev_still_serves_the_schema_for_developers(database):
    with TestClient(create_app()) as dev:
        assert dev.get("/openapi.json").status_code == 200
        assert dev.get("/docs").status_code == 200


METRICS_TOKEN = "metrics-token-0123456789-abcdefghijklmnop"
TIMING = ("_sum", "_bucket", "_created")


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.endswith(TIMING)
    }


def test_production_without_a_metrics_token_has_no_metrics(database, settings_env):
    settings_env(env="production")
    with TestClient(create_app()) as production:
        assert production.get("/metrics").status_code == 404
        with_any = production.get("/metrics", headers={"authorization": "Bearer anything"})
        assert with_any.status_code == 404
        assert "mailing_" not in with_any.text


def test_metrics_need_the_bearer_token_when_one_is_set(database, settings_env):
    for env in ("production", "dev"):
        settings_env(env=env, metrics_token=METRICS_TOKEN)
        with TestClient(create_app()) as c:
            for header in (
                None,
                "Bearer wrong",
                f"Bearer {METRICS_TOKEN}x",
                f"Bearer {METRICS_TOKEN[:-1]}",
                f"Basic {METRICS_TOKEN}",
                METRICS_TOKEN,
                "Bearer ",
                "Bearer é",
            ):
                headers = {"authorization": header.encode()} if header else {}
                answer = c.get("/metrics", headers=headers)
                assert answer.status_code == 401, (env, header)
                assert answer.headers["www-authenticate"].startswith("Bearer")
                assert "mailing_" not in answer.text
            answer = c.get("/metrics", headers={"authorization": f"Bearer {METRICS_TOKEN}"})
            assert answer.status_code == 200 and "mailing_database_up" in answer.text


def test_dev_without_a_token_keeps_metrics_open(client):
    assert client.get("/metrics").status_code == 200


def test_a_sign_up_of_a_new_address_moves_no_series_that_a_known_one_does_not(
    database, smtp, worker, session, settings_env
):
    settings_env(env="production", metrics_token=METRICS_TOKEN)
    auth = {"authorization": f"Bearer {METRICS_TOKEN}"}
    with TestClient(create_app(), raise_server_exceptions=False) as production:
        active_subscriber(production, smtp, session, "known@example.org", ["healthy-minds"])
        drain_worker()

        def scrape():
            answer = production.get("/metrics", headers=auth)
            assert answer.status_code == 200
            return _samples(answer.text)

        def sign_up(email):
            assert subscribe(production, email).status_code == 202
            drain_worker()

        start = scrape()
        sign_up("brand-new@example.org")
        after_new = scrape()
        sign_up("known@example.org")
        after_known = scrape()

    def moved(before, after):
        keys = set(before) | set(after)
        return {
            k: after.get(k, 0) - before.get(k, 0) for k in keys if after.get(k) != before.get(k)
        }

    assert moved(start, after_new) == moved(after_new, after_known)
    subscribers = {k: v for k, v in after_new.items() if k[0] == "mailing_subscribers"}
    assert subscribers == {k: v for k, v in start.items() if k[0] == "mailing_subscribers"}
    exposed = {s.value for s in SubscriberStatus} - {SubscriberStatus.PENDING.value}
    assert {dict(k[1])["status"] for k in subscribers} == exposed

"""Residents' browsers get the site's own pages, never JSON: over the per-IP limit a form
sign-up gets an HTML page saying when to try again (429, Retry-After), an unknown address the
site's 404 page. JSON clients keep JSON. Production defaults (the per-IP limit at its default)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from mailing.config import Settings
from mailing.web.deps import IP_WINDOW_SECONDS
from tests.conftest import reload_settings
from tests.support.helpers import table_snapshot

BROWSER = {"accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
FORM = {"email": "someone@example.org", "themes": "healthy-minds"}  # no consent: nothing stored
LIMIT = Settings.model_fields["rate_limit_per_ip"].default


@pytest.fixture
def limited(prod: TestClient, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The production app with the per-IP limit at its default (the suite raises it)."""
    from mailing.web.app import create_app

    monkeypatch.delenv("MAILING_RATE_LIMIT_PER_IP")
    reload_settings()
    with TestClient(create_app(), raise_server_exceptions=False) as c:
        yield c
    monkeypatch.undo()
    reload_settings()


def _use_up_the_limit(c: TestClient) -> None:
    for _ in range(LIMIT):
        assert c.post("/subscriptions", data=FORM, headers=BROWSER).status_code == 422


def _retry_after(answer: Any) -> int:
    seconds = int(answer.headers["retry-after"])
    assert 1 <= seconds <= IP_WINDOW_SECONDS
    return seconds


def test_a_form_sign_up_over_the_limit_gets_a_page_saying_when_to_try_again(
    limited: TestClient,
) -> None:
    _use_up_the_limit(limited)
    before = table_snapshot()
    answer = limited.post("/subscriptions", data=FORM, headers=BROWSER)
    assert answer.status_code == 429
    assert answer.headers["content-type"].startswith("text/html")
    seconds = _retry_after(answer)
    assert "<h1>Too many requests from your network</h1>" in answer.text
    assert f"try again in {seconds} second" in answer.text
    assert "Nothing was saved" in answer.text
    # A form posted without an Accept header (a plain client) is a form all the same.
    plain = limited.post("/subscriptions", data=FORM)
    assert plain.status_code == 429 and plain.headers["content-type"].startswith("text/html")
    assert table_snapshot() == before


def test_a_json_client_over_the_limit_keeps_the_json_answer(limited: TestClient) -> None:
    _use_up_the_limit(limited)
    answer = limited.post(
        "/subscriptions", json={"email": "a@example.org", "consent": True}, headers=BROWSER
    )
    assert answer.status_code == 429
    assert answer.json()["detail"].startswith("Too many requests")
    _retry_after(answer)


@pytest.mark.parametrize("path", ["/no-such-page", "/updates/1/extra", "/confirm"])
def test_an_unknown_address_gets_the_sites_own_404_page(prod: TestClient, path: str) -> None:
    answer = prod.get(path, headers=BROWSER)
    assert answer.status_code == 404
    assert answer.headers["content-type"].startswith("text/html")
    assert "<h1>Page not found</h1>" in answer.text
    assert 'href="/static/style.css"' in answer.text  # the site's own layout


def test_a_json_client_asking_for_an_unknown_address_keeps_json(prod: TestClient) -> None:
    assert prod.get("/no-such-page").json() == {"detail": "Not Found"}
    answer = prod.get("/no-such-page", headers={"accept": "application/json"})
    assert answer.status_code == 404 and answer.json() == {"detail": "Not Found"}


def test_a_form_over_the_body_limit_gets_a_page_and_json_keeps_json(prod: TestClient) -> None:
    big = {"email": "big@example.org", "source": "x" * 70_000}
    before = table_snapshot()
    form = prod.post("/subscriptions", data=big, headers=BROWSER)
    assert form.status_code == 413
    assert form.headers["content-type"].startswith("text/html")
    assert "the limit is 64 KiB" in form.text and 'href="/static/style.css"' in form.text
    as_json = prod.post("/subscriptions", json=big)
    assert as_json.status_code == 413 and "64 KiB" in as_json.json()["detail"]
    assert table_snapshot() == before

"""Bad sign-up input of every kind: a clear 4xx answer, and nothing stored or sent."""

from __future__ import annotations

import json

import pytest

from tests.support.helpers import table_snapshot

GOOD = {"email": "resident@example.org", "themes": ["healthy-minds"], "consent": True}


def _with(**changes):
    body = dict(GOOD)
    for key, value in changes.items():
        if value is ...:
            body.pop(key)
        else:
            body[key] = value
    return body


BAD_JSON = {
    "not an address": (_with(email="not-an-address"), "email"),
    "two at signs": (_with(email="a@b@example.org"), "email"),
    "no domain dot": (_with(email="someone@localhost"), "email"),
    "empty address": (_with(email=""), "email"),
    "missing address": (_with(email=...), "email"),
    "address not text": (_with(email=["a@example.org"]), "email"),
    "CR/LF in address": (_with(email="a@example.org\r\nBcc: victim@example.org"), "email"),
    "LF in address": (_with(email="a@example.org\nX: y"), "email"),
    "over-long address": (_with(email="a" * 250 + "@example.org"), "email"),
    "unknown theme": (_with(themes=["healthy-wealth"]), "themes"),
    "theme not text": (_with(themes=[1]), "themes"),
    "themes not a list": (_with(themes={"a": 1}), "themes"),
    "too many themes": (_with(themes=["healthy-minds"] * 50), "themes"),
    "CR/LF in theme": (_with(themes=["healthy-minds\r\n"]), "themes"),
    "consent false": (_with(consent=False), "consent"),
    "consent missing": (_with(consent=...), "consent"),
    "consent as a string": (_with(consent="true"), "consent"),
    "consent as 1": (_with(consent=1), "consent"),
    "CR/LF in source": (_with(source="https://a.example/\r\nX: y"), "source"),
    "over-long source": (_with(source="https://a.example/" + "x" * 600), "source"),
}


@pytest.mark.parametrize("body,field", BAD_JSON.values(), ids=BAD_JSON.keys())
def test_bad_json_signup_is_422_and_changes_nothing(client, smtp, body, field):
    before = table_snapshot()
    answer = client.post("/subscriptions", json=body)
    assert answer.status_code == 422
    detail = answer.json()["detail"]
    assert any(d["loc"] == ["body", field] for d in detail), detail
    assert all(isinstance(d["msg"], str) and len(d["msg"]) > 10 for d in detail)
    assert table_snapshot() == before
    assert smtp.outbox.messages() == []


@pytest.mark.parametrize(
    "raw,content_type",
    [
        (b"{not json", "application/json"),
        (b"[1, 2]", "application/json"),
        (b'"a string"', "application/json"),
        (b"\xff\xfe", "application/json"),
    ],
    ids=["malformed", "array", "string", "not utf-8"],
)
def test_malformed_bodies_are_422(client, raw, content_type):
    before = table_snapshot()
    answer = client.post("/subscriptions", content=raw, headers={"content-type": content_type})
    assert answer.status_code == 422
    assert "detail" in answer.json()
    assert table_snapshot() == before


def test_unsupported_content_type_is_415(client):
    before = table_snapshot()
    answer = client.post(
        "/subscriptions", content=b"email=a@example.org", headers={"content-type": "text/plain"}
    )
    assert answer.status_code == 415
    assert "JSON" in answer.json()["detail"]
    assert table_snapshot() == before


def test_body_over_64_kib_is_413(client):
    before = table_snapshot()
    big = json.dumps(_with(source="x" * (65 * 1024))).encode()
    answer = client.post(
        "/subscriptions", content=big, headers={"content-type": "application/json"}
    )
    assert answer.status_code == 413
    assert table_snapshot() == before


def test_body_over_64_kib_without_content_length_is_413(client):
    def chunks():
        for _ in range(70):
            yield b"x" * 1024

    answer = client.post(
        "/subscriptions", content=chunks(), headers={"content-type": "application/json"}
    )
    assert answer.status_code == 413


def test_form_errors_rerender_the_page_with_a_linked_summary(client, smtp):
    before = table_snapshot()
    answer = client.post(
        "/subscriptions",
        data={"email": "not-an-address", "themes": ["healthy-minds"]},
        headers={"accept": "text/html"},
    )
    assert answer.status_code == 422
    page = answer.text
    assert "There is a problem" in page
    assert 'href="#email"' in page and 'href="#consent"' in page
    assert 'value="not-an-address"' in page  # what they typed is kept
    assert 'value="healthy-minds"\n               checked' in page or "checked" in page
    assert table_snapshot() == before
    assert smtp.outbox.messages() == []


def test_form_escapes_what_was_typed(client):
    answer = client.post(
        "/subscriptions",
        data={"email": '"><script>alert(1)</script>'},
        headers={"accept": "text/html"},
    )
    assert answer.status_code == 422
    assert "<script>alert(1)</script>" not in answer.text
    assert "&lt;script&gt;" in answer.text


def test_honeypot_gets_the_same_answer_and_nothing_happens(client, smtp):
    before = table_snapshot()
    answer = client.post(
        "/subscriptions",
        data={"email": "bot@example.org", "consent": "yes", "website": "http://spam.example"},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == "/check-your-email"
    assert table_snapshot() == before
    assert smtp.outbox.wait_for(1, timeout=0.5) == []

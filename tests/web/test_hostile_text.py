"""Text that is not what it looks like, on the production defaults: a lone UTF-16 surrogate in
any JSON body, an empty frequency, and invisible or direction-changing characters in an update's
subject are each refused with 422 naming the field, log no traceback, and change nothing."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from fastapi.testclient import TestClient

from mailing.subscribers import links
from mailing.subscribers.tokens import Purpose
from mailing.web.middleware import lone_surrogate_at
from tests.staff.test_console import csrf_of, sign_in
from tests.support.helpers import table_snapshot
from tests.support.selfservice import active_subscriber
from tests.support.sending import api_staff as make_staff
from tests.support.staff import make_staff as console_staff

LONE = "\\ud800"  # the six characters of the JSON escape, as an attacker sends them


def _post_raw(c: TestClient, method: str, path: str, text: str, headers: dict[str, str]) -> Any:
    return c.request(
        method,
        path,
        content=text.encode("utf-8", "surrogatepass"),
        headers={**headers, "content-type": "application/json"},
    )


def _no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


def test_a_lone_surrogate_anywhere_in_json_is_422_naming_the_field(
    prod: TestClient, smtp: Any, session: Any, caplog: pytest.LogCaptureFixture
) -> None:
    sub = active_subscriber(prod, smtp, session, "surrogate@example.org", ["healthy-minds"])
    preferences = links.url_for(Purpose.MANAGE, sub).removeprefix("http://testserver")
    staff = {"authorization": f"Bearer {make_staff('sender', 'surr@staff.example.org')}"}
    made = prod.post(
        "/admin/updates",
        json={"subject": "Draft", "body": "Body", "themes": ["healthy-minds"]},
        headers=staff,
    )
    draft = made.json()["id"]
    cases = [
        ("POST", "/subscriptions", f'{{"email": "a{LONE}@example.org", "consent": true}}', "email"),
        ("POST", "/subscriptions", f'{{"email": "b@example.org", "source": "{LONE}"}}', "source"),
        ("POST", preferences, f'{{"themes": ["healthy-minds{LONE}"]}}', "themes.0"),
        ("POST", preferences, f'{{"frequency": "{LONE}"}}', "frequency"),
        ("POST", "/erasure-requests", f'{{"email": "{LONE}@example.org"}}', "email"),
        ("POST", "/admin/updates", f'{{"subject": "S{LONE}", "body": "b"}}', "subject"),
        ("PATCH", f"/admin/updates/{draft}", f'{{"body": "x {LONE} y"}}', "body"),
        ("POST", f"/admin/updates/{draft}/send", f'{{"fingerprint": "{LONE}"}}', "fingerprint"),
        ("POST", f"/admin/updates/{draft}/test", f'{{"{LONE}to": 1}}', "to"),
    ]
    # The same surrogate as UTF-8 bytes: not valid UTF-8, yet Python's parser decodes it.
    as_bytes = [(m, p, t.replace(LONE, "\ud800"), f) for m, p, t, f in cases]
    before = table_snapshot()
    caplog.clear()
    caplog.set_level(logging.INFO)
    for method, path, text, field in cases + as_bytes:
        answer = _post_raw(prod, method, path, text, staff if "/admin/" in path else {})
        assert answer.status_code == 422, (path, answer.status_code, answer.text[:300])
        [error] = answer.json()["detail"]
        assert ".".join(str(p) for p in error["loc"][1:]) == field, (path, error)
        assert "surrogate" in error["msg"]
    assert table_snapshot() == before
    _no_traceback(caplog)


def test_a_surrogate_pair_is_one_character_and_is_read_as_usual() -> None:
    assert lone_surrogate_at(b'{"subject": "Parks \\ud83c\\udf33"}') is None
    assert lone_surrogate_at(b'{"subject": "not an escape: \\\\ud800"}') is None
    assert lone_surrogate_at(b'{"a": ["x", {"b": "\\udfff"}]}') == ["a", 1, "b"]
    assert lone_surrogate_at(b'"\\ud800"') == []


def test_an_empty_frequency_is_422_on_sign_up_and_preferences(
    prod: TestClient, smtp: Any, session: Any
) -> None:
    sub = active_subscriber(prod, smtp, session, "often@example.org", ["healthy-minds"])
    preferences = links.url_for(Purpose.MANAGE, sub).removeprefix("http://testserver")
    before = table_snapshot()
    signup = prod.post(
        "/subscriptions", json={"email": "new@example.org", "consent": True, "frequency": ""}
    )
    change = prod.post(preferences, json={"frequency": ""})
    both = prod.post(preferences, json={"themes": ["healthy-minds"], "frequency": ""})
    for answer in (signup, change, both):
        assert answer.status_code == 422, answer.text
        assert answer.json()["detail"][0]["loc"] == ["body", "frequency"]
    assert table_snapshot() == before


INVISIBLE = {
    "right-to-left override": "\u202e",
    "left-to-right isolate": "\u2066",
    "pop directional isolate": "\u2069",
    "zero-width space": "\u200b",
    "zero-width joiner": "\u200d",
    "byte order mark": "\ufeff",
}


@pytest.mark.parametrize("char", INVISIBLE.values(), ids=INVISIBLE.keys())
def test_invisible_or_direction_changing_characters_in_a_subject_are_422_through_the_api(
    prod: TestClient, char: str
) -> None:
    staff = {"authorization": f"Bearer {make_staff('editor', 'bidi@staff.example.org')}"}
    before = table_snapshot()
    made = prod.post(
        "/admin/updates",
        json={"subject": f"Invoice {char}fdp.exe", "body": "Body", "themes": ["healthy-minds"]},
        headers=staff,
    )
    assert made.status_code == 422, made.text
    [error] = made.json()["detail"]
    assert error["loc"] == ["body", "subject"]
    assert f"U+{ord(char):04X}" in error["msg"]
    assert table_snapshot() == before
    draft = prod.post(
        "/admin/updates",
        json={"subject": "Fine", "body": "Body", "themes": ["healthy-minds"]},
        headers=staff,
    ).json()["id"]
    edited = prod.patch(f"/admin/updates/{draft}", json={"subject": f"A{char}B"}, headers=staff)
    assert edited.status_code == 422
    assert edited.json()["detail"][0]["loc"] == ["body", "subject"]
    assert prod.get(f"/admin/updates/{draft}", headers=staff).json()["subject"] == "Fine"


def test_the_body_keeps_emoji_joiners_but_not_direction_overrides(prod: TestClient) -> None:
    staff = {"authorization": f"Bearer {make_staff('editor', 'zwj@staff.example.org')}"}
    family = "\U0001f469\u200d\U0001f469\u200d\U0001f467"
    kept = prod.post(
        "/admin/updates",
        json={"subject": "Families", "body": f"For {family} all.", "themes": ["healthy-minds"]},
        headers=staff,
    )
    assert kept.status_code == 201, kept.text
    assert family in kept.json()["body"]
    refused = prod.post(
        "/admin/updates",
        json={"subject": "Families", "body": "Pay \u202eexe.doc", "themes": ["healthy-minds"]},
        headers=staff,
    )
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["loc"] == ["body", "body"]


def test_a_direction_override_in_a_subject_is_refused_in_the_console(
    prod: TestClient, session: Any
) -> None:
    console_staff(session, "bidi-editor@gla.example", "editor")
    assert sign_in(prod, "bidi-editor@gla.example").status_code == 303
    before = table_snapshot()
    form = prod.get("/admin/compose")
    answer = prod.post(
        "/admin/compose",
        data={
            "subject": "Healthy \u202eMinds",
            "body": "Hello.",
            "themes": ["healthy-minds"],
            "csrf_token": csrf_of(form.text),
        },
        follow_redirects=False,
    )
    assert answer.status_code == 422
    assert 'href="#subject"' in answer.text and "U+202E" in answer.text
    assert table_snapshot() == before

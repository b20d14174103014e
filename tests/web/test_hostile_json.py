"""Hostile JSON on every JSON body: deep nesting answers 422, logs no traceback, changes nothing."""

from __future__ import annotations

import logging

import pytest

from mailing.db import session_scope
from mailing.staff.members import create_staff
from mailing.states import StaffRole
from mailing.subscribers import links
from mailing.subscribers.tokens import Purpose
from mailing.web.middleware import MAX_JSON_DEPTH, json_too_deep
from tests.support.helpers import table_snapshot
from tests.support.selfservice import active_subscriber

DEEP = b"[" * 30_000 + b"]" * 30_000  # under the 64 KiB body limit; Python's parser recurses
DEEP_IN_FIELD = b'{"email": "a@example.org", "themes": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"
JUST_TOO_DEEP = b'{"themes": ' + b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH + b"}"
UNBALANCED = b"{" * 50_000


def _staff_token() -> str:
    with session_scope() as session:
        _, token = create_staff(session, "fuzz-editor@example.org", StaffRole.ADMIN)
    return token


def _json_posts(client, smtp, session) -> list[tuple[str, str, dict[str, str]]]:
    sub = active_subscriber(client, smtp, session, "nested@example.org", ["healthy-minds"])
    token = _staff_token()
    staff = {"authorization": f"Bearer {token}"}
    draft = client.post(
        "/admin/updates",
        json={"subject": "Draft", "body": "Body", "themes": ["healthy-minds"]},
        headers=staff,
    ).json()["id"]
    return [
        ("POST", "/subscriptions", {}),
        ("POST", "/erasure-requests", {}),
        ("POST", links.url_for(Purpose.MANAGE, sub).removeprefix("http://testserver"), {}),
        ("POST", "/admin/updates", staff),
        ("PATCH", f"/admin/updates/{draft}", staff),
        ("POST", f"/admin/updates/{draft}/test", staff),
    ]


@pytest.mark.parametrize(
    "body", [DEEP, DEEP_IN_FIELD, JUST_TOO_DEEP], ids=["deep", "deep-in-a-field", "depth-33"]
)
def test_deeply_nested_json_answers_422_everywhere_and_logs_no_traceback(
    client, smtp, session, caplog, body
):
    targets = _json_posts(client, smtp, session)
    before = table_snapshot()
    caplog.clear()
    caplog.set_level(logging.INFO)
    for method, path, headers in targets:
        answer = client.request(
            method, path, content=body, headers={**headers, "content-type": "application/json"}
        )
        assert answer.status_code == 422, (path, answer.status_code, answer.text[:200])
        assert "nested too deeply" in answer.json()["detail"][0]["msg"]
    assert table_snapshot() == before
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


def test_unbalanced_brackets_are_invalid_json_not_an_error(client, caplog):
    caplog.set_level(logging.INFO)
    for path in ("/subscriptions", "/erasure-requests"):
        answer = client.post(path, content=UNBALANCED, headers={"content-type": "application/json"})
        assert answer.status_code == 422, path
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


def test_nesting_within_the_limit_is_read_as_usual(client):
    themes = b'{"email": "a@example.org", "consent": true, "themes": [[["healthy-minds"]]]}'
    answer = client.post(
        "/subscriptions", content=themes, headers={"content-type": "application/json"}
    )
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["body", "themes"]


def test_depth_is_measured_without_recursion_and_ignores_brackets_in_text():
    assert not json_too_deep(b'{"a": [1, 2, {"b": []}]}')
    assert not json_too_deep(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH)
    assert json_too_deep(b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1))
    assert json_too_deep(DEEP)
    assert not json_too_deep(b'{"text": "' + b"[{" * 1000 + b'"}')
    assert not json_too_deep(UNBALANCED)  # not JSON at all: the route says so

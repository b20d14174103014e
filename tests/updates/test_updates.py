"""Updates: drafts and their validation, safe Markdown, preview, test copies, and the headers
and footer links every update email carries."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mailing.models import Update
from tests.support.helpers import count, table_snapshot
from tests.support.sending import (
    Sink,
    SinkServer,
    add_subscribers,
    draft,
    start,
    wait_sent,
)
from tests.support.sending import (
    api_staff as make_staff,
)

GOOD = {"subject": "Parks news", "body": "New *parks*.", "themes": ["healthy-places"]}
NASTY = """# Hello <script>alert(1)</script>

<script>alert(2)</script> <img src=x onerror=alert(3)> <a href="javascript:alert(4)">x</a>

[click](javascript:alert(5)) [also](JaVaScRiPt:alert(6)) [data](data:text/html,hi)
[ok](https://www.london.gov.uk/health) [mail](mailto:health@london.gov.uk)
<style>body{}</style>
"""


@pytest.fixture
def auth(database: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_staff('sender')}"}


@pytest.fixture
def relay(settings_env: Callable[..., None], worker: Any) -> Iterator[Sink]:
    with SinkServer() as server:
        settings_env(smtp_host="127.0.0.1", smtp_port=server.port)
        yield server.sink


def test_creating_a_draft_answers_201_with_its_id(client: Any, auth: dict[str, str]) -> None:
    answer = client.post("/admin/updates", json=GOOD, headers=auth)
    assert answer.status_code == 201
    body = answer.json()
    assert body["status"] == "draft"
    assert (body["subject"], body["themes"], body["recipients"]) == (
        "Parks news",
        ["healthy-places"],
        0,
    )
    assert client.get(f"/admin/updates/{body['id']}", headers=auth).json()["body"] == "New *parks*."


@pytest.mark.parametrize(
    "change",
    [
        {"subject": ""},
        {"subject": "two\r\nlines"},
        {"subject": "x" * 201},
        {"subject": 5},
        {"body": ""},
        {"body": "x" * (100 * 1024 + 1)},
        {"themes": []},
        {"themes": ["healthy-pets"]},
        {"themes": "healthy-places"},
        {"extra": 1},
    ],
)
def test_a_bad_draft_is_refused_with_422_and_nothing_stored(
    client: Any, auth: dict[str, str], change: dict[str, Any]
) -> None:
    before = table_snapshot()
    answer = client.post("/admin/updates", json={**GOOD, **change}, headers=auth)
    assert answer.status_code in (413, 422)
    assert "detail" in answer.json()
    assert table_snapshot() == before


def test_a_draft_can_be_edited_until_it_is_sent(client: Any, auth: dict[str, str]) -> None:
    update_id = client.post("/admin/updates", json=GOOD, headers=auth).json()["id"]
    edited = client.patch(
        f"/admin/updates/{update_id}",
        json={"subject": "Better", "themes": ["healthy-minds"]},
        headers=auth,
    )
    assert edited.status_code == 200
    assert (edited.json()["subject"], edited.json()["themes"], edited.json()["body"]) == (
        "Better",
        ["healthy-minds"],
        "New *parks*.",
    )
    assert (
        client.patch(f"/admin/updates/{update_id}", json={"themes": []}, headers=auth).status_code
        == 422
    )
    client.post(f"/admin/updates/{update_id}/send", headers=auth)
    late = client.patch(f"/admin/updates/{update_id}", json={"subject": "Too late"}, headers=auth)
    assert late.status_code == 409
    assert client.get(f"/admin/updates/{update_id}", headers=auth).json()["subject"] == "Better"


def test_a_missing_update_is_404(client: Any, auth: dict[str, str]) -> None:
    assert client.get("/admin/updates/999", headers=auth).status_code == 404
    assert client.post("/admin/updates/999/send", headers=auth).status_code == 404
    assert client.get("/admin/updates/999/preview", headers=auth).status_code == 404


def test_markdown_never_lets_html_or_script_links_through() -> None:
    from mailing.updates import render_html, render_text

    html = str(render_html(NASTY))
    assert "<script" not in html.lower()
    assert "<img" not in html.lower() and "<style" not in html.lower()
    hrefs = re.findall(r'href="([^"]*)"', html)
    assert hrefs == ["https://www.london.gov.uk/health", "mailto:health@london.gov.uk"]
    assert "&lt;script&gt;" in html
    text = render_text(NASTY)
    assert "ok (https://www.london.gov.uk/health)" in text
    assert "health@london.gov.uk" in text


def test_the_html_part_has_inline_styles_and_the_text_part_says_the_same() -> None:
    from mailing.updates import render_html, render_text

    body = "## Heading\n\nA [link](https://example.org/a) and a list:\n\n- one\n- two\n"
    html = str(render_html(body))
    assert '<h2 style="' in html and '<a style="' in html and '<li style="' in html
    text = render_text(body)
    assert "Heading\n-------" in text
    assert "A link (https://example.org/a) and a list:" in text
    assert "- one\n- two" in text


def test_preview_shows_the_email_with_example_links(client: Any, auth: dict[str, str]) -> None:
    update_id = client.post("/admin/updates", json={**GOOD, "body": NASTY}, headers=auth).json()[
        "id"
    ]
    answer = client.get(f"/admin/updates/{update_id}/preview", headers=auth)
    assert answer.status_code == 200
    shown = answer.json()
    assert shown["subject"] == "Parks news"
    assert "<script" not in shown["html"].lower()
    assert "http://testserver/unsubscribe/" in shown["text"]
    assert "Healthy Places" in shown["text"] and "Healthy Places" in shown["html"]


def test_a_test_copy_is_marked_and_is_not_a_delivery(
    client: Any, auth: dict[str, str], smtp: Any
) -> None:
    add_subscribers(3, ["healthy-places"])
    update_id = client.post("/admin/updates", json=GOOD, headers=auth).json()["id"]
    answer = client.post(
        f"/admin/updates/{update_id}/test", json={"to": "sender@staff.example.org"}, headers=auth
    )
    assert answer.status_code == 202
    (mail,) = smtp.outbox.wait_for(1, timeout=10)
    assert mail.to == ["sender@staff.example.org"]
    assert "TEST" in mail.subject
    assert "TEST" in mail.part("plain") and "TEST" in mail.part("html")
    assert count("delivery") == 0
    shown = client.get(f"/admin/updates/{update_id}", headers=auth).json()
    assert (shown["status"], shown["sent"]) == ("draft", 0)


def test_a_test_send_to_a_bad_address_is_422(client: Any, auth: dict[str, str]) -> None:
    update_id = client.post("/admin/updates", json=GOOD, headers=auth).json()["id"]
    for bad in ["not-an-address", "a@b\r\nBcc: x@y.org", ""]:
        answer = client.post(f"/admin/updates/{update_id}/test", json={"to": bad}, headers=auth)
        assert answer.status_code == 422


def test_every_update_email_carries_the_contract_headers_and_links(relay: Sink) -> None:
    from mailing.db import session_scope
    from mailing.subscribers.links import subscriber_for
    from mailing.subscribers.tokens import Purpose

    emails = add_subscribers(12, ["healthy-minds"])
    update_id = draft(subject="Minds", body=NASTY, themes=["healthy-minds", "healthy-living"])
    start(update_id)
    wait_sent(update_id)
    messages = relay.messages()
    assert sorted(r for r, _ in messages) == sorted(emails)
    for rcpt, msg in messages:
        assert msg["To"] == rcpt
        assert msg.get_content_type() == "multipart/alternative"
        plain = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
        unsub = re.findall(r"http://testserver/unsubscribe/([A-Za-z0-9._-]+)", plain)
        prefs = re.findall(r"http://testserver/preferences/([A-Za-z0-9._-]+)", plain)
        assert len(set(unsub)) == 1 and len(set(prefs)) == 1
        assert msg["List-Unsubscribe"] == f"<http://testserver/unsubscribe/{unsub[0]}>"
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert msg["List-Id"]
        assert f"http://testserver/unsubscribe/{unsub[0]}" in html
        assert f"http://testserver/preferences/{prefs[0]}" in html
        assert "Healthy Minds, Healthy Living" in plain
        assert (
            "<script" not in html.lower()
            and "javascript:"
            not in re.sub(r"\s", "", "".join(re.findall(r'href="[^"]*"', html))).lower()
        )
        with session_scope() as session:
            assert subscriber_for(session, Purpose.UNSUBSCRIBE, unsub[0]).email == rcpt
            assert subscriber_for(session, Purpose.MANAGE, prefs[0]).email == rcpt
    assert "TEST" not in messages[0][1]["Subject"]


def test_the_update_email_is_built_once_per_update() -> None:
    from mailing import updates

    update = Update(id=7, subject="S", body="B", themes="healthy-minds")
    first = updates.prepared_for(update)
    assert updates.prepared_for(update) is first
    one = first.personalise(updates.recipient_values("a@example.net", "tok-a", "man-a"))
    two = first.personalise(updates.recipient_values("b@example.net", "tok-b", "man-b"))
    assert b"tok-a" in one and b"tok-a" not in two and b"To: b@example.net" in two

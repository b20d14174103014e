"""What staff write can never misuse subscribers' data or jam a send: personal values go only
where the template puts them; a draft the builder would refuse is refused when drafted; a send
that still cannot be built stops with a message; test copies go to staff only, limited and
audited with the recipient."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from mailing.db import get_engine
from tests.support.helpers import count
from tests.support.sending import (
    Sink,
    SinkServer,
    add_subscribers,
    update_row,
    wait_until,
)
from tests.support.sending import (
    api_staff as make_staff,
)


@pytest.fixture
def relay(settings_env: Callable[..., None], worker: Any) -> Iterator[Sink]:
    with SinkServer() as server:
        settings_env(smtp_host="127.0.0.1", smtp_port=server.port)
        yield server.sink


@pytest.fixture
def sender(database: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_staff('sender', 'sender@staff.example.org')}"}


def _placeholder_attempts() -> list[str]:
    """Every spelling of a per-recipient value that a writer might try."""
    from mailing.mail import builder as emails

    names = ["TO", "UNSUBSCRIBE", "MANAGE", "MESSAGE_ID"]
    guessed = [f"@@{n}@@" for n in names]
    # Even the real marker's shape with a guessed marker cannot match.
    guessed += [f"@@deadbeef{n}@@" for n in names]
    assert emails.placeholder("TO") not in guessed
    return guessed


def test_text_written_by_staff_never_carries_a_recipients_address_or_links(
    client: Any, sender: dict[str, str], relay: Sink
) -> None:
    emails = add_subscribers(3, ["healthy-minds"], prefix="victim")
    attempts = _placeholder_attempts()
    body = "Read more: [here](https://evil.example/?a=" + "&b=".join(attempts) + ")\n\n"
    body += " ".join(attempts)
    created = client.post(
        "/admin/updates",
        json={"subject": "News " + attempts[0], "body": body, "themes": ["healthy-minds"]},
        headers=sender,
    )
    assert created.status_code == 201
    update_id = created.json()["id"]
    assert client.post(f"/admin/updates/{update_id}/send", headers=sender).status_code == 202
    relay.wait_for(3, timeout=30)
    for rcpt, message in relay.messages():
        raw = message.as_string()
        body_text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        # The writer's text arrives exactly as written...
        for attempt in attempts:
            assert attempt in body_text
        # ...and the only places holding the address or a token are the template's own.
        assert rcpt in emails
        assert "evil.example" in raw
        evil_links = re.findall(r"https://evil\.example/[^\s)\]>\"]*", body_text)
        assert evil_links and all(rcpt not in link for link in evil_links)
        assert all("unsubscribe/" not in link for link in evil_links)
        assert rcpt not in message["Subject"]


@pytest.mark.parametrize(
    "subject",
    [
        "Line\u2028separator",
        "Paragraph\u2029separator",
        "Next\u0085line",
        "Vertical\x0btab",
        "Form\x0cfeed",
        "Bell\x07",
        "Escape\x1b[31m",
    ],
)
def test_a_subject_the_email_builder_would_refuse_is_422_when_drafted(
    client: Any, sender: dict[str, str], subject: str
) -> None:
    answer = client.post(
        "/admin/updates",
        json={"subject": subject, "body": "Text", "themes": ["healthy-minds"]},
        headers=sender,
    )
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["body", "subject"]
    assert count("theme_update") == 0


def test_a_body_with_control_characters_is_422_naming_the_body(
    client: Any, sender: dict[str, str]
) -> None:
    for body in ["Bad \x00 byte", "Escape \x1b[2J", "Bell \x07"]:
        answer = client.post(
            "/admin/updates",
            json={"subject": "Fine", "body": body, "themes": ["healthy-minds"]},
            headers=sender,
        )
        assert answer.status_code == 422, body
        assert answer.json()["detail"][0]["loc"] == ["body", "body"]
    # Tabs, line breaks and emoji sequences (a zero-width joiner) are ordinary text in the body
    # (a subject may hold no invisible character: tests/web/test_hostile_text.py).
    fine = client.post(
        "/admin/updates",
        json={
            "subject": "Care \U0001f469 news",
            "body": "Col\tumn\r\nNext line \u2028 still fine \U0001f469\u200d\u2695\ufe0f",
            "themes": ["healthy-minds"],
        },
        headers=sender,
    )
    assert fine.status_code == 201


def test_a_send_the_builder_refuses_stops_with_a_message_instead_of_retrying(
    client: Any, sender: dict[str, str], relay: Sink
) -> None:
    """An update stored before today's validation (or by hand) that cannot be built."""
    from mailing.models import Update

    add_subscribers(5, ["healthy-minds"], prefix="jam")
    with get_engine().begin() as conn:
        update_id = conn.execute(
            sa.insert(Update.__table__)  # type: ignore[attr-defined]
            .values(
                subject="Broken\u2028subject",
                body="Text",
                themes="healthy-minds",
                status="draft",
                recipients=0,
                sent=0,
                failed=0,
            )
            .returning(sa.column("id"))
        ).scalar_one()
    answer = client.post(f"/admin/updates/{update_id}/send", headers=sender)
    assert answer.status_code == 202
    wait_until(
        lambda: update_row(update_id).status.value == "cancelled", 30, "the send to be stopped"
    )
    shown = client.get(f"/admin/updates/{update_id}", headers=sender).json()
    assert shown["status"] == "cancelled"
    assert "subject" in shown["error"]
    assert shown["cancelled"] == 5 and shown["pending"] == 0
    assert relay.count() == 0
    test = client.post(
        f"/admin/updates/{update_id}/test", json={"to": "sender@staff.example.org"}, headers=sender
    )
    assert test.status_code == 422


def test_test_copies_go_to_staff_only_are_limited_and_audited_with_the_recipient(
    client: Any, sender: dict[str, str], settings_env: Callable[..., None], smtp: Any
) -> None:
    make_staff("editor", "colleague@staff.example.org")
    settings_env(test_sends_per_hour=3)
    update_id = client.post(
        "/admin/updates",
        json={"subject": "Hi", "body": "Text", "themes": ["healthy-minds"]},
        headers=sender,
    ).json()["id"]
    path = f"/admin/updates/{update_id}/test"
    for outsider in ["resident@example.org", "SENDER@staff.example.org.evil.example"]:
        refused = client.post(path, json={"to": outsider}, headers=sender)
        assert refused.status_code == 422, outsider
        assert refused.json()["detail"][0]["loc"] == ["body", "to"]
    assert (
        client.post(path, json={"to": "sender@staff.example.org"}, headers=sender).status_code
        == 202
    )
    assert (
        client.post(path, json={"to": "Colleague@Staff.example.org"}, headers=sender).status_code
        == 202
    )
    assert (
        client.post(path, json={"to": "sender@staff.example.org"}, headers=sender).status_code
        == 202
    )
    limited = client.post(path, json={"to": "sender@staff.example.org"}, headers=sender)
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0
    with get_engine().connect() as conn:
        details = [
            r[0]
            for r in conn.execute(
                sa.text("SELECT detail FROM audit_log WHERE action = 'test-sent' ORDER BY id")
            )
        ]
    assert details == [
        "to sender@staff.example.org",
        "to colleague@staff.example.org",
        "to sender@staff.example.org",
    ]
    mails = smtp.outbox.wait_for(3, timeout=10)
    assert sorted(m.to[0] for m in mails if "TEST" in m.subject) == [
        "colleague@staff.example.org",
        "sender@staff.example.org",
        "sender@staff.example.org",
    ]


def test_a_disabled_staff_member_is_not_a_test_recipient(
    client: Any, sender: dict[str, str], session: Any
) -> None:
    from mailing.models import Staff
    from mailing.staff import members

    make_staff("editor", "gone@staff.example.org")
    gone = session.query(Staff).filter(Staff.email == "gone@staff.example.org").one()
    members.disable(session, gone)
    session.commit()
    update_id = client.post(
        "/admin/updates",
        json={"subject": "Hi", "body": "Text", "themes": ["healthy-minds"]},
        headers=sender,
    ).json()["id"]
    answer = client.post(
        f"/admin/updates/{update_id}/test", json={"to": "gone@staff.example.org"}, headers=sender
    )
    assert answer.status_code == 422

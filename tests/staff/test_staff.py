"""Staff: API tokens stored only as hashes, roles on the JSON API, the audit log, figures."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from mailing.db import get_engine
from tests.support.helpers import count, table_snapshot
from tests.support.sending import add_subscribers
from tests.support.sending import api_staff as make_staff

DRAFT = {"subject": "Parks news", "body": "New *parks*.", "themes": ["healthy-places"]}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_staff_create_prints_the_token_alone_on_its_last_line(database: str) -> None:
    from mailing.cli import main

    result = CliRunner().invoke(main, ["staff", "create", "Editor@Example.org", "--role", "editor"])
    assert result.exit_code == 0, result.output
    token = result.output.strip().splitlines()[-1]
    assert len(token) >= 40 and " " not in token
    with get_engine().connect() as conn:
        row = conn.execute(sa.text("SELECT email, role, token_hash FROM staff")).one()
        everything = " ".join(str(v) for v in conn.execute(sa.text("SELECT * FROM staff")).one())
    assert row == ("editor@example.org", "editor", hashlib.sha256(token.encode()).hexdigest())
    assert token not in everything


def test_staff_create_with_password_stores_an_argon2_hash(database: str) -> None:
    from mailing.cli import main

    result = CliRunner().invoke(
        main,
        ["staff", "create", "admin@example.org", "--role", "admin", "--password"],
        input="correct horse battery\ncorrect horse battery\n",
    )
    assert result.exit_code == 0, result.output
    with get_engine().connect() as conn:
        stored = conn.execute(sa.text("SELECT password_hash FROM staff")).scalar_one()
    assert stored.startswith("$argon2")


def test_staff_create_refuses_a_second_member_with_the_same_address(database: str) -> None:
    from mailing.cli import main

    runner = CliRunner()
    assert (
        runner.invoke(main, ["staff", "create", "a@example.org", "--role", "editor"]).exit_code == 0
    )
    again = runner.invoke(main, ["staff", "create", "a@example.org", "--role", "admin"])
    assert again.exit_code != 0
    assert count("staff") == 1


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer "},
    ],
)
def test_no_or_a_wrong_token_gets_401(client: Any, headers: dict[str, str]) -> None:
    make_staff("admin")
    before = table_snapshot()
    for method, path in [
        ("post", "/admin/updates"),
        ("get", "/admin/updates/1"),
        ("post", "/admin/updates/1/send"),
        ("get", "/admin/stats"),
    ]:
        answer = getattr(client, method)(
            path, headers=headers, **({"json": DRAFT} if method == "post" else {})
        )
        assert answer.status_code == 401, (method, path)
        assert answer.headers["www-authenticate"].startswith("Bearer")
        assert "detail" in answer.json()
    assert table_snapshot() == before


def test_a_disabled_staff_member_token_stops_working(client: Any) -> None:
    token = make_staff("editor")
    assert client.get("/admin/stats", headers=bearer(token)).status_code == 200
    with get_engine().begin() as conn:
        conn.execute(sa.text("UPDATE staff SET disabled_at = created_at"))
    assert client.get("/admin/stats", headers=bearer(token)).status_code == 401


def test_an_editor_drafts_and_test_sends_but_may_not_send(client: Any, smtp: Any) -> None:
    token = make_staff("editor")
    add_subscribers(3, ["healthy-places"])
    created = client.post("/admin/updates", json=DRAFT, headers=bearer(token))
    assert created.status_code == 201
    update_id = created.json()["id"]
    test = client.post(
        f"/admin/updates/{update_id}/test",
        json={"to": "editor@staff.example.org"},
        headers=bearer(token),
    )
    assert test.status_code == 202
    refused = client.post(f"/admin/updates/{update_id}/send", headers=bearer(token))
    assert refused.status_code == 403
    assert (
        client.get(f"/admin/updates/{update_id}", headers=bearer(token)).json()["status"] == "draft"
    )
    assert count("delivery") == 0


@pytest.mark.parametrize("role", ["sender", "admin"])
def test_a_sender_or_admin_may_send(client: Any, role: str) -> None:
    token = make_staff(role)
    add_subscribers(3, ["healthy-places"])
    update_id = client.post("/admin/updates", json=DRAFT, headers=bearer(token)).json()["id"]
    answer = client.post(f"/admin/updates/{update_id}/send", headers=bearer(token))
    assert answer.status_code == 202
    assert answer.json()["status"] in ("sending", "sent")
    assert answer.json()["recipients"] == 3


def test_the_audit_log_records_who_drafted_edited_tested_and_sent(client: Any) -> None:
    token = make_staff("sender", "sender@staff.example.org")
    add_subscribers(2, ["healthy-places"], prefix="reader")
    update_id = client.post("/admin/updates", json=DRAFT, headers=bearer(token)).json()["id"]
    client.patch(f"/admin/updates/{update_id}", json={"subject": "Parks"}, headers=bearer(token))
    client.post(
        f"/admin/updates/{update_id}/test",
        json={"to": "sender@staff.example.org"},
        headers=bearer(token),
    )
    client.post(f"/admin/updates/{update_id}/send", headers=bearer(token))
    with get_engine().connect() as conn:
        staff_id = conn.execute(sa.text("SELECT id FROM staff")).scalar_one()
        rows = conn.execute(
            sa.text(
                "SELECT staff_id, action, update_id, detail FROM audit_log "
                "WHERE update_id IS NOT NULL ORDER BY id"
            )
        ).all()
    assert [(r[0], r[1], r[2]) for r in rows] == [
        (staff_id, "drafted", update_id),
        (staff_id, "edited", update_id),
        (staff_id, "test-sent", update_id),
        (staff_id, "sent", update_id),
    ]
    assert not any("reader" in (r[3] or "") for r in rows)


def test_stats_count_subscribers_by_status_and_theme_without_personal_data(client: Any) -> None:
    token = make_staff("editor")
    add_subscribers(4, ["healthy-minds", "healthy-living"], prefix="a")
    add_subscribers(2, ["healthy-minds"], status="pending", prefix="b")
    add_subscribers(1, ["healthy-minds"], status="unsubscribed", prefix="c")
    answer = client.get("/admin/stats", headers=bearer(token))
    assert answer.status_code == 200
    body = answer.json()
    assert body["subscribers"] == {"pending": 2, "active": 4, "unsubscribed": 1, "bounced": 0}
    assert body["active_by_theme"]["healthy-minds"] == 4
    assert body["active_by_theme"]["healthy-children"] == 0
    assert "@" not in answer.text

"""Two-person review (issue 25): "Ask for review" emails the senders a link to the send
confirmation (its fingerprint pins what they saw), the author is told when it has gone, and
MAILING_REQUIRE_REVIEW makes review by someone other than the author mandatory."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlmodel import select

from mailing.models import AuditLog, utcnow
from mailing.staff import apitokens
from mailing.staff.members import create_staff, disable
from mailing.states import StaffRole
from tests.staff.test_console import csrf_of, signed_in_client
from tests.support.helpers import count, subscribe, table_snapshot


def _bearer(session, email: str, role: StaffRole) -> dict[str, str]:
    _staff, token = create_staff(session, email, role)
    session.commit()
    return {"Authorization": f"Bearer {token}"}


def _draft(client, bearer) -> int:
    made = client.post(
        "/admin/updates",
        json={"subject": "Parks open late", "body": "Hello", "themes": ["healthy-places"]},
        headers=bearer,
    )
    assert made.status_code == 201, made.text
    return made.json()["id"]


def _mail_to(smtp, address: str, count_at_least: int) -> list:
    return [m for m in smtp.outbox.wait_for(count_at_least) if address in m.to]


def test_asking_for_review_emails_the_other_senders_a_link_to_the_send_page(client, session, smtp):
    author = _bearer(session, "author@gla.example", StaffRole.SENDER)
    _bearer(session, "reviewer@gla.example", StaffRole.SENDER)
    _bearer(session, "admin@gla.example", StaffRole.ADMIN)
    _bearer(session, "editor@gla.example", StaffRole.EDITOR)
    gone, _ = create_staff(session, "gone@gla.example", StaffRole.SENDER)
    disable(session, gone)
    session.commit()
    update_id = _draft(client, author)
    asked = client.post(f"/admin/updates/{update_id}/review", headers=author)
    assert asked.status_code == 202 and asked.json()["reviewers"] == 2
    messages = smtp.outbox.wait_for(2)
    assert sorted(m.to[0] for m in messages) == ["admin@gla.example", "reviewer@gla.example"]
    assert f"http://testserver/admin/drafts/{update_id}/send" in messages[0].part("plain")
    assert "Parks open late" in messages[0].subject
    rows = session.exec(select(AuditLog).where(AuditLog.action == "review-asked")).all()
    assert [r.update_id for r in rows] == [update_id]


def test_review_cannot_be_asked_with_nobody_else_to_review(client, session):
    author = _bearer(session, "author@gla.example", StaffRole.SENDER)
    update_id = _draft(client, author)
    before = table_snapshot()
    answer = client.post(f"/admin/updates/{update_id}/review", headers=author)
    assert answer.status_code == 409
    assert table_snapshot() == before


def test_the_author_is_told_when_a_reviewer_sent_it(client, session, smtp):
    editor = _bearer(session, "editor@gla.example", StaffRole.EDITOR)
    sender = _bearer(session, "sender@gla.example", StaffRole.SENDER)
    subscribe(client, "resident@example.org")
    update_id = _draft(client, editor)
    client.post(f"/admin/updates/{update_id}/review", headers=editor)
    fingerprint = client.get(f"/admin/updates/{update_id}", headers=sender).json()["fingerprint"]
    sent = client.post(
        f"/admin/updates/{update_id}/send", json={"fingerprint": fingerprint}, headers=sender
    )
    assert sent.status_code == 202, sent.text
    told = [m for m in smtp.outbox.wait_for(3) if "editor@gla.example" in m.to]
    assert told and told[-1].subject.startswith("It has gone")
    assert f"/admin/drafts/{update_id}/progress" in told[-1].part("plain")


def test_require_review_refuses_the_author_and_a_send_without_the_fingerprint(
    client, session, settings_env
):
    settings_env(require_review="true")
    author = _bearer(session, "author@gla.example", StaffRole.SENDER)
    other = _bearer(session, "other@gla.example", StaffRole.SENDER)
    update_id = _draft(client, author)
    fingerprint = client.get(f"/admin/updates/{update_id}", headers=other).json()["fingerprint"]
    before = table_snapshot()
    own = client.post(
        f"/admin/updates/{update_id}/send", json={"fingerprint": fingerprint}, headers=author
    )
    assert own.status_code == 403 and "MAILING_REQUIRE_REVIEW" in own.json()["detail"]
    unseen = client.post(f"/admin/updates/{update_id}/send", headers=other)
    assert unseen.status_code == 409
    later = (utcnow() + timedelta(days=1)).isoformat()
    own_later = client.post(
        f"/admin/updates/{update_id}/schedule",
        json={"send_at": later, "fingerprint": fingerprint},
        headers=author,
    )
    assert own_later.status_code == 403
    assert table_snapshot() == before
    reviewed = client.post(
        f"/admin/updates/{update_id}/send", json={"fingerprint": fingerprint}, headers=other
    )
    assert reviewed.status_code == 202


def test_without_the_setting_the_author_may_send_their_own(client, session):
    author = _bearer(session, "author@gla.example", StaffRole.SENDER)
    update_id = _draft(client, author)
    assert client.post(f"/admin/updates/{update_id}/send", headers=author).status_code == 202


def test_the_console_asks_for_review_and_refuses_the_author_when_review_is_required(
    client, session, smtp, settings_env
):
    signed_in_client(client, session, "sender@gla.example", "sender")
    create_staff(session, "reviewer@gla.example", StaffRole.SENDER)
    session.commit()
    page = client.get("/admin/compose")
    saved = client.post(
        "/admin/compose",
        data={
            "csrf_token": csrf_of(page.text),
            "subject": "Parks",
            "body": "Hello",
            "themes": ["healthy-places"],
        },
    )
    assert saved.status_code == 200, saved.text
    update_id = int(str(saved.url).rstrip("/").split("/drafts/")[1].split("?")[0])
    assert "Ask for review" in saved.text
    asked = client.post(
        f"/admin/drafts/{update_id}/review", data={"csrf_token": csrf_of(saved.text)}
    )
    assert asked.status_code == 200 and "asked to review it" in asked.text
    assert _mail_to(smtp, "reviewer@gla.example", 1)

    settings_env(require_review="true")
    from mailing import updates
    from mailing.models import Update

    confirm = client.get(f"/admin/drafts/{update_id}/send")
    refused = client.post(
        f"/admin/drafts/{update_id}/send",
        data={
            "csrf_token": csrf_of(confirm.text),
            "fingerprint": updates.fingerprint(session.get(Update, update_id)),
        },
    )
    assert refused.status_code == 403 and "someone other than the author" in refused.text
    assert count("delivery") == 0


def test_production_review_then_send_by_another_sender(
    database, smtp, worker, session, settings_env
):
    from mailing.web.app import create_app

    settings_env(env="production")
    editor = _bearer(session, "editor@gla.example", StaffRole.EDITOR)
    sender_staff, _ = create_staff(session, "sender@gla.example", StaffRole.SENDER)
    sender = {"Authorization": f"Bearer {apitokens.issue_token(session, sender_staff)}"}
    session.commit()
    with TestClient(create_app(), base_url="https://testserver") as web:
        update_id = _draft(web, editor)
        assert web.post(f"/admin/updates/{update_id}/review", headers=editor).status_code == 202
        assert _mail_to(smtp, "sender@gla.example", 1)
        fingerprint = web.get(f"/admin/updates/{update_id}", headers=sender).json()["fingerprint"]
        sent = web.post(
            f"/admin/updates/{update_id}/send", json={"fingerprint": fingerprint}, headers=sender
        )
        assert sent.status_code == 202
        assert _mail_to(smtp, "editor@gla.example", 2)


def test_the_author_is_told_when_a_scheduled_send_starts_at_its_time(client, session, smtp):
    """Beat's reconciler starts a scheduled update: its author is owed "it has gone" too."""
    from mailing import sending
    from mailing.models import Notice, Staff
    from mailing.states import NoticeKind
    from workers.enqueue import publish_update_batches

    editor = _bearer(session, "editor@gla.example", StaffRole.EDITOR)
    sender = _bearer(session, "sender@gla.example", StaffRole.SENDER)
    subscribe(client, "resident@example.org")
    update_id = _draft(client, editor)
    at = utcnow() + timedelta(hours=1)
    scheduled = client.post(
        f"/admin/updates/{update_id}/schedule", json={"send_at": at.isoformat()}, headers=sender
    )
    assert scheduled.status_code == 200, scheduled.text
    owed = select(Notice).where(Notice.kind == NoticeKind.UPDATE_SENT)
    assert session.exec(owed).all() == []
    assert sending.start_due(session, at + timedelta(seconds=1), publish_update_batches) == 1
    session.commit()
    [notice] = session.exec(owed).all()
    author = session.exec(select(Staff).where(Staff.email == "editor@gla.example")).one()
    assert (notice.update_id, notice.staff_id) == (update_id, author.id)
